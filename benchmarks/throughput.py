"""Training images/s and inference slices/s of one method on whatever device this runs on.

    python benchmarks/throughput.py [--method mean-teacher] [--preset ssl4mis] [--device auto] [--steps 30]
                                    [--warmup 5] [--set KEY=VALUE]... [--json OUT.json]

Training: ``--steps`` optimiser steps of the real trainer (``Trainer._train_step``: stream draw, augmentation,
host-to-device copy, forward, backward, step) on the built-in cardiac phantom at the preset's slice size and batch,
after ``--warmup`` steps; images/s counts labelled + unlabelled samples per step. Inference: every test volume
predicted slice-wise in ``eval.batch_size`` batches (``volume_predictor``); slices/s.

Variants, each measured in this run: ``baseline`` (full precision, no channels-last, no cuDNN autotuning, no pinned
memory) and ``fast`` (the trainer's defaults on CUDA: AMP bf16/fp16, channels-last, cudnn.benchmark, pinned
batches; on the CPU: bf16 autocast). Ratios are against the baseline of the same run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "baseline": {
        "trainer.amp": False,
        "trainer.channels_last": False,
        "trainer.cudnn_benchmark": False,
        "trainer.pin_memory": False,
        "eval.amp": False,
    },
    "fast": {"trainer.amp": True, "trainer.channels_last": True, "trainer.cudnn_benchmark": True, "eval.amp": True},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method: str, preset: str, device: torch.device, steps: int, warmup: int, overrides: dict) -> dict:
    from ssl_bench.evaluation.evaluate import volume_predictor
    from ssl_bench.training.runner import build_adapter, build_method, resolve_config
    from ssl_bench.training.trainer import Trainer

    cfg = resolve_config(method, "cardiac-phantom", preset=preset, overrides=overrides)
    if device.type == "cpu" and cfg.trainer.amp:
        cfg.trainer.amp_dtype = "bf16"  # the CPU's only AMP
    torch.backends.cudnn.benchmark = bool(cfg.trainer.cudnn_benchmark and device.type == "cuda")
    adapter = build_adapter(cfg)
    trainer = Trainer(cfg, build_method(cfg, adapter), adapter, Path("/nonexistent/throughput"), device, False)
    stage = next((s for s in trainer.stages if s.unlabeled), trainer.stages[0])
    per_step = cfg.trainer.batch_size + (
        cfg.trainer.unlabeled_batch_size if trainer.stream_u and stage.unlabeled else 0
    )
    for _ in range(warmup):
        trainer._train_step(stage)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer._train_step(stage)
    _sync(device)
    train_s = time.perf_counter() - t0
    trainer.method.eval()
    predict = volume_predictor(
        trainer.method.predict, 2, cfg.eval, tuple(cfg.dataset.image_size), device, cfg.dataset.image_resize
    )
    cases = [adapter.load_case(c) for c in adapter.splits()["test"]]
    predict(cases[0].image)  # warm-up (cuDNN autotuning, allocator)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for case in cases:
            predict(case.image)
    _sync(device)
    infer_s = time.perf_counter() - t0
    slices = sum(c.image.shape[0] for c in cases)
    return {
        "settings": trainer.perf.describe(),
        "train_images_per_s": round(steps * per_step / train_s, 2),
        "train_step_ms": round(1000 * train_s / steps, 2),
        "infer_slices_per_s": round(slices / infer_s, 2),
        "images_per_step": per_step,
        "test_slices": slices,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="mean-teacher")
    ap.add_argument("--preset", default=None, help="default: ssl4mis on CUDA, smoke on the CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    from ssl_bench.core.config import parse_set
    from ssl_bench.training.runner import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    preset = args.preset or ("ssl4mis" if device.type == "cuda" else "smoke")
    extra = parse_set(args.sets)
    results = {}
    for name, variant in VARIANTS.items():
        results[name] = measure(args.method, preset, device, args.steps, args.warmup, {**variant, **extra})
    base = results["baseline"]
    for res in results.values():
        res["train_speedup"] = round(res["train_images_per_s"] / base["train_images_per_s"], 3)
        res["infer_speedup"] = round(res["infer_slices_per_s"] / base["infer_slices_per_s"], 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    report = {"device": name, "method": args.method, "preset": preset, "steps": args.steps, "results": results}
    print(f"# {args.method}, preset {preset}, {name}, {args.steps} steps after {args.warmup} warm-up")
    print(f"{'variant':<9} {'train img/s':>12} {'x':>6} {'infer slices/s':>15} {'x':>6}  settings")
    for key, res in results.items():
        print(
            f"{key:<9} {res['train_images_per_s']:>12.1f} {res['train_speedup']:>6.2f} "
            f"{res['infer_slices_per_s']:>15.1f} {res['infer_speedup']:>6.2f}  {res['settings']}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
