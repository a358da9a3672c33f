"""Cost of the methods: training step against Mean Teacher, epoch-end passes (CoraNet's mask refresh, Temporal
Ensembling's targets), and peak memory of the 3D ``cpu`` preset.

Run: ``pytest benchmarks/test_bench_methods.py --benchmark-only -s``
(``SSL_BENCH_BENCH_PRESET=paper`` times the paper preset's sizes instead of ``cpu``; slow on a CPU.)

1. **Step cost** — every 2D method built exactly as ``ssl-bench run --method M --dataset acdc --preset P`` builds it
   (backbone, heads, batch sizes, image size), on synthetic slices of that size; a step is what the trainer does
   (``training_step``, backward, Adam step, ``after_optimizer_step``) in the stage that uses unlabelled data, half-way
   through its ramps, with the stored targets/masks a method keeps (CoraNet's offline masks, TE's ensemble) in
   place. Methods are timed in interleaved rounds (median per method) so drifting machine load hits all alike;
   ratios are against Mean Teacher measured in the same run. The CoraNet paper reports 2.863 h vs 2.685 h for
   Mean Teacher (1.07x); the goal here is <= 1.15x, reported (met or missed), not asserted. Where CoraNet's extra
   time goes: the two extra §IV-A branches (copies of the U-Net's last decoder level) at full resolution on the
   labelled batch, and nothing else (E + D is the plain U-Net). The FLOP ratio (``torch.utils.flop_counter``) is
   printed beside the time ratio.
2. **Epoch-end passes** — CoraNet's refresh (pseudo-labels + masks for the whole unlabelled set, batched) and
   TE's target update, over as many slices as ACDC's unlabelled part at 20 % labelled (counted from the real copy
   when ``SSL_BENCH_ACDC`` is set), as a share of the training time between two such passes: with the preset's
   short epochs (40 steps) and with the paper's (one pass over the unlabelled set; CoraNet every 5 epochs).
3. **3D peak memory** — one child process per (method, backbone) holds a pancreas-sized training set in memory,
   runs training steps of the ``pancreas-ct-3d`` ``cpu`` preset, a CoraNet refresh over the 50 unlabelled views
   and a sliding-window prediction of one volume, and reports its peak resident memory (goal: < 8 GB).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from ssl_bench.core.method import Batch, EpochData, Method, StepInfo
from ssl_bench.core.registry import DATASETS
from ssl_bench.training.runner import build_method, resolve_config

PRESET = os.environ.get("SSL_BENCH_BENCH_PRESET", "cpu")
METHODS_2D = (
    "mean-teacher",
    "unet",
    "pi-model",
    "temporal-ensembling",
    "ua-mt",
    "pseudo-label",
    "vat",
    "coranet",
    "fixmatch",
    "unimatch",
    "cps",
    "bcp",
    "abd",
    "urpc",
    "mc-net",
    "mc-net-plus",
    "ict",
    "entropy-min",
)
BASELINE = "mean-teacher"
CORANET_GOAL = 1.15
ROUNDS, STEPS_PER_ROUND = 5, 3
ACDC_UNLABELLED_SLICES = 1050  # 1312 training slices minus the 14 labelled patients' ~262 (real count if available)
_RESULTS: dict[str, Any] = {}


class Bench:
    """A method built as ``ssl-bench run`` builds it, with an optimiser and synthetic batches of its sizes."""

    def __init__(
        self,
        name: str,
        dataset: str = "acdc",
        preset: str = PRESET,
        stored: int = 32,
        backbone: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = resolve_config(name, dataset, preset=preset, seed=0, backbone=backbone, overrides=overrides)
        self.spec = DATASETS.get(dataset).spec
        self.method: Method = build_method(self.cfg, SimpleNamespace(spec=self.spec))
        self.opt = torch.optim.Adam(self.method.trainable_parameters(), lr=1e-4)
        self.size = tuple(self.cfg.dataset.patch_size if self.spec.dims == 3 else self.cfg.dataset.image_size)
        self.gen = torch.Generator().manual_seed(0)
        self.stored = stored
        stages = self.method.stages()
        self.stage = stages[-1]
        tc = self.cfg.trainer
        #: steps per epoch: the preset's, or one pass over ACDC's unlabelled slices (presets with epochs = passes)
        self.steps_per_epoch = tc.iters_per_epoch or math.ceil(ACDC_UNLABELLED_SLICES / tc.unlabeled_batch_size)
        spe = self.steps_per_epoch
        before = sum(s.epochs for s in stages[:-1]) * spe
        half = self.stage.epochs * spe // 2
        self.info = StepInfo(
            step=before + half,
            epoch=(before + half) // spe,
            stage=self.stage.name,
            stage_step=half,
            stage_steps=self.stage.epochs * spe,
            total_steps=tc.epochs * spe,
            steps_per_epoch=spe,
        )

    def images(self, n: int) -> torch.Tensor:
        return torch.rand(n, self.spec.in_channels, *self.size, generator=self.gen)

    def batch(self, n: int, labelled: bool) -> Batch:
        label = torch.randint(0, self.spec.num_classes, (n, *self.size), generator=self.gen) if labelled else None
        return Batch(self.images(n), label, torch.randint(0, self.stored, (n,), generator=self.gen))

    def epoch_data(self, n: int, batch_size: int = 16) -> EpochData:
        images = self.images(min(n, 64))  # cycled: the cost is in the passes, not in holding n distinct images

        def iterate(bs: int):
            for start in range(0, n, bs):
                idx = torch.arange(start, min(n, start + bs))
                yield Batch(images[idx % len(images)], None, idx)

        return EpochData(iterate, n, torch.device("cpu"))

    def fill_stored_state(self) -> None:
        """Run the epoch-end hooks until the method has stored its per-image state (masks, ensemble targets)."""
        data = self.epoch_data(self.stored)
        first = sum(s.epochs for s in self.method.stages()[:-1])
        for epoch in range(first, first + 10):
            if self.method.on_epoch_end(epoch, self.stage, data) is not None:
                return

    def step(self) -> None:
        tc = self.cfg.trainer
        self.method.train()
        batch_u = self.batch(tc.unlabeled_batch_size, False) if self.stage.unlabeled else None
        loss = self.method.training_step(self.batch(tc.batch_size, True), batch_u, self.info)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.method.after_optimizer_step(self.info)


def step_flops(b: Bench) -> float:
    """Floating-point operations of one training step (forward + backward, ``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        b.step()
    return float(counter.get_total_flops())


def _interleaved_step_times(benches: dict[str, Bench]) -> dict[str, float]:
    for b in benches.values():
        b.fill_stored_state()
        for _ in range(2):  # warm-up
            b.step()
    times: dict[str, list[float]] = {name: [] for name in benches}
    for _ in range(ROUNDS):
        for name, b in benches.items():
            t0 = time.perf_counter()
            for _ in range(STEPS_PER_ROUND):
                b.step()
            times[name].append((time.perf_counter() - t0) / STEPS_PER_ROUND)
    return {name: statistics.median(t) for name, t in times.items()}


def test_bench_step_cost_against_mean_teacher(benchmark):
    benches = {name: Bench(name) for name in METHODS_2D}
    step_s = benchmark.pedantic(lambda: _interleaved_step_times(benches), rounds=1, iterations=1)
    base = step_s[BASELINE]
    cfg = benches[BASELINE].cfg
    print(
        f"\n[step] acdc, preset {PRESET}: {cfg.model.backbone} width {cfg.model.width}, "
        f"{tuple(cfg.dataset.image_size)} px, batch {cfg.trainer.batch_size} + {cfg.trainer.unlabeled_batch_size}, "
        f"{torch.get_num_threads()} threads; median of {ROUNDS} interleaved rounds"
    )
    flops = {name: step_flops(b) for name, b in benches.items()}
    print(
        f"| method | ms / step | x {BASELINE} (time) | GFLOP / step | x {BASELINE} (FLOPs) | params (train) |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for name, s in step_s.items():
        params = benches[name].method.parameter_counts()["train"]
        f_ratio = flops[name] / flops[BASELINE]
        print(
            f"| {name} | {1e3 * s:.0f} | {s / base:.2f} | {flops[name] / 1e9:.1f} | {f_ratio:.2f} | "
            f"{params / 1e6:.2f} M |"
        )
        benchmark.extra_info[f"{name}_ms"] = 1e3 * s
        benchmark.extra_info[f"{name}_ratio"] = s / base
        benchmark.extra_info[f"{name}_flop_ratio"] = f_ratio
    _RESULTS["step_s"] = step_s
    ratio = step_s["coranet"] / base
    print(f"[step] FLOPs: coranet / {BASELINE} = {flops['coranet'] / flops[BASELINE]:.2f}")
    verdict = "meets" if ratio <= CORANET_GOAL else "MISSES"
    benchmark.extra_info["coranet_goal_met"] = ratio <= CORANET_GOAL
    print(
        f"[step] coranet / {BASELINE} = {ratio:.2f}: {verdict} the goal <= {CORANET_GOAL} "
        "(paper, end-to-end GPU hours: 2.863 / 2.685 = 1.07)"
    )


def _acdc_unlabelled_slices() -> int:
    root = os.environ.get("SSL_BENCH_ACDC")
    if not root:
        return ACDC_UNLABELLED_SLICES
    cfg = resolve_config("coranet", "acdc", preset=PRESET, data_root=root)
    adapter = DATASETS.get("acdc")(root)
    labelled = set(adapter.labelled_patients(cfg.dataset.labeled, cfg.dataset.selection))
    slices = adapter.training_slices(adapter.splits()["train"])
    return sum(1 for case in slices.case_ids if adapter.group(case) not in labelled)


@pytest.mark.parametrize("name", ["coranet", "temporal-ensembling"])
def test_bench_epoch_end_pass(benchmark, name):
    n = _acdc_unlabelled_slices()
    b = Bench(name, stored=n)
    b.fill_stored_state()  # allocate the stored state once, as after the first pass
    data = b.epoch_data(n)
    first = sum(s.epochs for s in b.method.stages()[:-1])
    every = getattr(b.method.cfg, "refresh_every", 1)
    epoch = first + every - 1 if name == "coranet" else first  # an epoch at which the hook does its pass

    def run() -> None:
        assert b.method.on_epoch_end(epoch, b.stage, data) is not None

    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = benchmark.stats.stats.min
    step_s = _RESULTS.get("step_s", {}).get(name)
    if step_s is None:  # measured alone: time a few steps here
        b.step()
        t0 = time.perf_counter()
        for _ in range(STEPS_PER_ROUND):
            b.step()
        step_s = (time.perf_counter() - t0) / STEPS_PER_ROUND
    between = every * b.steps_per_epoch * step_s
    share = seconds / (seconds + between)
    # the paper's schedule: an epoch is one pass over the unlabelled set; CoraNet refreshes every 5 epochs
    paper_every = 5 if name == "coranet" else 1
    paper_between = paper_every * math.ceil(n / b.cfg.trainer.unlabeled_batch_size) * step_s
    paper_share = seconds / (seconds + paper_between)
    benchmark.extra_info.update(
        {"slices": n, "seconds": seconds, "share_of_training": share, "share_paper_schedule": paper_share}
    )
    print(
        f"\n[epoch-end] {name}: {n} unlabelled slices in {seconds:.1f} s = {n / seconds:.0f} slices/s "
        f"(training step {1e3 * step_s:.0f} ms)\n"
        f"  preset {PRESET}: every {every} epoch(s) of {b.steps_per_epoch} steps = {between:.0f} s of "
        f"training -> {100 * share:.1f} % of the time\n"
        f"  paper schedule: every {paper_every} pass(es) over the unlabelled set = {paper_between:.0f} s -> "
        f"{100 * paper_share:.1f} %"
    )


# -- 3D peak memory -----------------------------------------------------------------------------------------------

#: a pancreas-ct-3d training volume after the reference preprocessing (GT box + 25 voxel margin, 1 mm in-plane)
PANCREAS_VOLUME = (128, 160, 160)
MEMORY_GOAL_GB = 8.0

_CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {bench_dir!r})
from test_bench_methods import Bench, PANCREAS_VOLUME
from ssl_bench.evaluation.inference import predict_volume_3d
torch.set_num_threads({threads})
b = Bench({method!r}, dataset="pancreas-ct-3d", preset="cpu", stored=50, backbone={backbone!r})
labelled = [torch.rand(*PANCREAS_VOLUME) for _ in range(12)]  # the labelled volumes (random crops are taken)
labels = [torch.zeros(PANCREAS_VOLUME, dtype=torch.uint8) for _ in range(12)]
b.fill_stored_state()  # CoraNet: masks of the 50 unlabelled centre views
for _ in range(3):
    b.step()
b.method.eval()
with torch.no_grad():
    predict_volume_3d(b.method.predict, labelled[0].numpy(), b.cfg.eval.patch_size, b.cfg.eval.stride)
print(json.dumps({{"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
                  "patch": list(b.size), "batch": [b.cfg.trainer.batch_size, b.cfg.trainer.unlabeled_batch_size]}}))
"""


@pytest.mark.parametrize("backbone", ["vnet", "resnet18-3d"])
@pytest.mark.parametrize("method", ["coranet", "mean-teacher", "ua-mt"])
def test_bench_3d_cpu_preset_peak_memory(benchmark, method, backbone):
    code = _CHILD.format(
        bench_dir=os.path.dirname(__file__), threads=max(1, torch.get_num_threads()), method=method, backbone=backbone
    )

    def run() -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    gb = out["peak_rss_mb"] / 1024
    benchmark.extra_info.update(out)
    print(
        f"\n[memory] {method} / {backbone}, pancreas-ct-3d cpu preset (patch {tuple(out['patch'])}, batch "
        f"{out['batch'][0]} + {out['batch'][1]}), 12 labelled volumes of {PANCREAS_VOLUME} in memory: "
        f"peak RSS {gb:.2f} GB (goal < {MEMORY_GOAL_GB:g} GB)"
    )
    assert gb < MEMORY_GOAL_GB
