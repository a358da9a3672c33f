"""Loader throughput against what the ``cpu`` preset consumes.

Run: ``pytest benchmarks/test_bench_loader.py --benchmark-only -s``

The trainer keeps the training slices in memory at the training size, so two loader stages matter:

1. **load** (once per run): ``adapter.training_slices`` (HDF5 slice files or volumes from disk) plus
   ``prepare_slices`` (resize to the training size) - the real ACDC copy when ``SSL_BENCH_ACDC`` is set, else a
   synthetic copy in the same SSL4MIS layout (1312 slices of 256 x 216) written to a temporary folder; also the
   same data through a prepared cache (``ssl-bench data prepare``);
2. **stream** (every step): a seeded batch with the ``flip-rot`` augmentation (``Stream.next``).

Consumption is one plain supervised training step of ACDC's ``cpu`` preset (U-Net width 16, depth 4, 128 x 128
slices, batch labelled + unlabelled as the preset resolves them, Adam), measured in the same run: slices per step
time, an upper bound on what any method consumes (semi-supervised methods spend more compute per slice). The
headroom (stream slices/s over consumed slices/s) must be at least 5; the load stage is reported as a fraction of
the preset's steps.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from ssl_bench.core.registry import BACKBONES, DATASETS
from ssl_bench.core.transforms import prepare_slices
from ssl_bench.datasets.common import prepare_dataset
from ssl_bench.training.runner import resolve_config
from ssl_bench.training.streams import Stream, TensorSource

_CPU = resolve_config("unet", "acdc", preset="cpu")
SIZE = tuple(_CPU.dataset.image_size)  # the cpu preset's ACDC slice size
BATCH = _CPU.trainer.batch_size  # one stream's batch
STEP_SLICES = _CPU.trainer.batch_size + _CPU.trainer.unlabeled_batch_size  # a semi-supervised step draws both
CPU_STEPS = _CPU.trainer.epochs * _CPU.trainer.iters_per_epoch
HEADROOM_GOAL = 5.0
_RESULTS: dict[str, float] = {}


def _synthetic_ssl4mis(root: Path, n_patients: int = 70, depth: int = 9, shape=(256, 216)) -> Path:
    """An SSL4MIS-layout copy of realistic size: 70 training patients x 2 frames x ~9 slices (~1260 slices)."""
    rng = np.random.default_rng(0)
    (root / "data" / "slices").mkdir(parents=True)
    ids = [f"patient{p:03d}" for p in range(1, n_patients + 1)]
    rows, vols = [], []
    for pid in ids:
        for frame in (1, 2):
            vid = f"{pid}_frame0{frame}"
            vols.append(vid)
            for k in range(1, depth + 1):
                image = rng.random(shape, dtype=np.float32)
                label = (rng.random(shape) * 4).astype(np.uint8)
                with h5py.File(root / "data" / "slices" / f"{vid}_slice_{k}.h5", "w") as fh:
                    fh.create_dataset("image", data=image, compression="gzip")
                    fh.create_dataset("label", data=label, compression="gzip")
                rows.append(f"{vid}_slice_{k}")
    (root / "train.list").write_text("\n".join(vols) + "\n")
    (root / "train_slices.list").write_text("\n".join(rows) + "\n")
    for name, pid in (("val.list", "patient998"), ("test.list", "patient999")):
        vid = f"{pid}_frame01"
        (root / name).write_text(vid + "\n")
        with h5py.File(root / "data" / f"{vid}.h5", "w") as fh:
            fh["image"] = rng.random((depth, *shape), dtype=np.float32)
            fh["label"] = np.zeros((depth, *shape), np.uint8)
    return root


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory) -> Path:
    real = os.environ.get("SSL_BENCH_ACDC")
    if real and Path(real).is_dir():
        return Path(real)
    return _synthetic_ssl4mis(tmp_path_factory.mktemp("acdc_synthetic"))


def _load(adapter: Any) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    t0 = time.perf_counter()
    train = adapter.splits()["train"]
    sset = adapter.training_slices(train)
    images, labels = prepare_slices(sset.images, sset.labels, SIZE)
    return images, labels, len(sset), time.perf_counter() - t0


def test_bench_load_from_disk(benchmark, acdc_root, tmp_path):
    adapter = DATASETS.get("acdc")(acdc_root)
    images, labels, n, seconds = benchmark.pedantic(lambda: _load(adapter), rounds=1, iterations=1)
    _RESULTS["load_ssl4mis_s"], _RESULTS["n_slices"] = seconds, n
    print(f"\n[load] {adapter.layout} layout: {n} slices in {seconds:.2f} s = {n / seconds:.0f} slices/s")
    if adapter.layout == "ssl4mis" and not os.environ.get("SSL_BENCH_ACDC"):
        return
    # the same data through the prepared cache (only for the real copy: its training volumes are stacked)
    dest = tmp_path / "prepared"
    t0 = time.perf_counter()
    prepare_dataset(DATASETS.get("acdc"), acdc_root, dest, echo=lambda s: None)
    prep_s = time.perf_counter() - t0
    _, _, n2, seconds2 = _load(DATASETS.get("acdc")(dest))
    _RESULTS["load_prepared_s"] = seconds2
    benchmark.extra_info.update({"prepared_load_s": seconds2, "prepare_once_s": prep_s})
    print(
        f"[load] prepared cache: {n2} slices in {seconds2:.2f} s = {n2 / seconds2:.0f} slices/s "
        f"(prepare, once: {prep_s:.1f} s)"
    )


def test_bench_stream_with_augmentation(benchmark, acdc_root):
    adapter = DATASETS.get("acdc")(acdc_root)
    images, labels, n, _ = _load(adapter)
    stream = Stream("labelled", TensorSource(images, labels, "flip-rot"), BATCH, seed=0)
    gen = torch.Generator().manual_seed(0)
    steps = 200

    def run() -> None:
        for _ in range(steps):
            stream.next(gen)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    best = benchmark.stats.stats.min
    rate = steps * BATCH / best
    _RESULTS["stream_slices_per_s"] = rate
    benchmark.extra_info["slices_per_s"] = rate
    print(f"\n[stream] flip-rot batches of {BATCH} at {SIZE}: {rate:.0f} slices/s")


def test_bench_cpu_preset_consumption(benchmark):
    torch.manual_seed(0)
    net = BACKBONES.get("unet2d")(1, 4, width=16, depth=4, norm="batch", dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    x = torch.rand(STEP_SLICES, 1, *SIZE)
    y = torch.randint(0, 4, (STEP_SLICES, *SIZE))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    best = benchmark.stats.stats.min
    consumed = STEP_SLICES / best
    _RESULTS["consumed_slices_per_s"], _RESULTS["step_s"] = consumed, best
    benchmark.extra_info["consumed_slices_per_s"] = consumed
    print(
        f"\n[consume] cpu preset step ({torch.get_num_threads()} threads): {best * 1e3:.0f} ms "
        f"= {consumed:.0f} slices/s"
    )
    stream = _RESULTS.get("stream_slices_per_s")
    if stream is None:
        pytest.skip("run with the stream benchmark to compare")
    headroom = stream / consumed
    benchmark.extra_info["headroom"] = headroom
    load = _RESULTS.get("load_ssl4mis_s")
    share = f"; one-off load {load:.1f} s = {100 * load / (load + CPU_STEPS * best):.1f} % of a cpu run" if load else ""
    print(f"[headroom] stream / consumption = {headroom:.0f}x (goal >= {HEADROOM_GOAL:g}x){share}")
    assert headroom >= HEADROOM_GOAL
