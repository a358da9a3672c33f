"""One run on 2 processes (gloo, CPU) equals one process with the same global batch; EMA teachers agree on every
rank; under torchrun only rank 0 writes and test scoring covers every case."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# BatchNorm (the smoke U-Net has it) is synchronised under DDP, so the equality holds with it; the loss is the
# per-pixel mean cross-entropy (a mean over equal-sized shards averages to the global batch's mean). The optimiser is
# SGD with momentum, whose step is linear in the gradient: Adam's step g / (sqrt(v) + eps) is about lr * sign(g) for
# a near-zero gradient, so it turns the last-bit difference of an all-reduced sum into a full-size weight difference
# (measured on an AMD EPYC host: 6.6e-4 after 4 Adam steps, with the losses equal to 1e-5)
OVERRIDES = {
    "optim.name": "sgd",
    "optim.lr": 0.01,
    "optim.momentum": 0.9,
    "params.loss": "ce",
    "trainer.batch_size": 4,
    "trainer.unlabeled_batch_size": 4,
    "dataset.augment": "ssl4mis",
}
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(method: str, out: Path, tag: str) -> None:
    """k optimiser steps of ``method`` through the trainer; writes losses and weights to ``out/<tag>-r<rank>.pt``."""
    from ssl_bench.core.distributed import rank
    from ssl_bench.training.runner import build_adapter, build_method, resolve_config
    from ssl_bench.training.trainer import Trainer

    cfg = resolve_config(method, "cardiac-phantom", preset="smoke", seed=3, overrides=dict(OVERRIDES))
    adapter = build_adapter(cfg)
    trainer = Trainer(cfg, build_method(cfg, adapter), adapter, out / "unused", torch.device("cpu"), progress=False)
    stage = trainer.stages[0]
    losses = [trainer._train_step(stage)["loss"] for _ in range(STEPS)]
    torch.save({"losses": losses, "model": trainer.method.state_dict()}, out / f"{tag}-r{rank()}.pt")


def _fresh_process(cache: str) -> None:
    """The same process state for the reference and the ranks: a fresh interpreter, one intra-op thread (a thread
    count left by earlier tests in the pytest process changes the reduction order of the reference's convolutions)."""
    os.environ.update({"SSL_BENCH_CACHE": cache, "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)


def _single(_index: int, out: str, cache: str) -> None:
    """The 1-process reference: global batch 4, no process group."""
    _fresh_process(cache)
    _train("unet", Path(out), "single")


def _worker(rank: int, world: int, port: int, out: str, cache: str) -> None:
    _fresh_process(cache)
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1"}
    )
    os.environ["MASTER_PORT"] = str(port)
    from ssl_bench.training.distributed import init_from_env

    assert init_from_env("cpu")
    for method in ("unet", "mean-teacher"):
        _train(method, Path(out), method)
    import torch.distributed as dist

    dist.destroy_process_group()


@contextlib.contextmanager
def _repository_on_path() -> Iterator[None]:
    """The spawned children unpickle their function as ``tests.test_distributed``: the repository root must be on
    their path (plain ``pytest``, unlike ``python -m pytest``, does not put the working directory there)."""
    root = str(Path(__file__).resolve().parents[1])
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        yield
    finally:
        if added:
            sys.path.remove(root)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    cache = os.environ.get("SSL_BENCH_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    with _repository_on_path():
        mp.spawn(_single, args=(str(out), cache), nprocs=1, join=True)  # also generates the phantom cache
        mp.spawn(_worker, args=(2, _free_port(), str(out), cache), nprocs=2, join=True)
    return out


def _close(a: dict, b: dict, tol: float = 1e-5) -> list[str]:
    return [k for k in a if not torch.allclose(a[k].double(), b[k].double(), atol=tol, rtol=tol)]


def test_two_processes_equal_one_process_with_the_same_global_batch(two_process_results):
    single = torch.load(two_process_results / "single-r0.pt")
    r0, r1 = (torch.load(two_process_results / f"unet-r{r}.pt") for r in (0, 1))
    assert single["losses"] == pytest.approx(r0["losses"], abs=1e-5, rel=1e-5)
    assert r0["losses"] == r1["losses"]  # the logged loss is the global batch's on every rank
    assert len(set(single["losses"])) == STEPS  # training moved
    assert not _close(single["model"], r0["model"]), "weights differ from the 1-process run"
    assert not _close(r0["model"], r1["model"], tol=0.0), "ranks disagree"
    bn = [k for k in single["model"] if k.endswith("running_mean")]
    assert bn and not _close({k: single["model"][k] for k in bn}, {k: r0["model"][k] for k in bn})


def test_ema_teachers_are_identical_on_every_rank(two_process_results):
    r0, r1 = (torch.load(two_process_results / f"mean-teacher-r{r}.pt")["model"] for r in (0, 1))
    teacher = [k for k in r0 if "teacher" in k or "ema" in k]
    assert teacher, list(r0)[:5]
    assert all(torch.equal(r0[k], r1[k]) for k in r0)


def _on_main_worker(rank: int, port: int, out: str) -> None:
    """Rank 0 creates a value, then fails; every rank writes what it saw."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch.distributed as dist

    from ssl_bench.core.distributed import on_main
    from ssl_bench.core.errors import RunDirError

    dist.init_process_group("gloo")
    seen = {"value": on_main(lambda: f"made by rank {dist.get_rank()}")}

    def refuse() -> None:
        raise RunDirError("run is in use by PID 1")

    try:
        on_main(refuse)
    except RunDirError as exc:
        seen["error"] = str(exc)
    Path(out, f"r{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


def test_a_rank_0_failure_stops_every_rank_with_its_message(tmp_path):
    """A lock refused or a folder not created on rank 0 raises on every rank (no rank waits in a collective)."""
    import torch.multiprocessing as mp

    with _repository_on_path():
        ctx = mp.spawn(_on_main_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False)
        deadline = time.monotonic() + 120
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:  # a rank waiting for rank 0 forever: the failure this test guards
                for process in ctx.processes:
                    process.kill()
                pytest.fail("a rank still waits 120 s after rank 0 failed")
    seen = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1] == {"value": "made by rank 0", "error": "run is in use by PID 1"}


def test_global_batchnorm_equals_batchnorm_in_one_process():
    from ssl_bench.training.distributed import GlobalBatchNorm

    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    bn, gbn = torch.nn.BatchNorm2d(3), GlobalBatchNorm(3)
    assert torch.equal(bn(x), gbn(x)) and torch.equal(bn.running_var, gbn.running_var)


def test_batch_not_divisible_by_the_processes_is_refused(monkeypatch):
    from ssl_bench.core import distributed as cd
    from ssl_bench.core.errors import ConfigError
    from ssl_bench.training.distributed import DistributedRun

    monkeypatch.setattr(cd, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="divisible by the 2 processes"):
        DistributedRun((3, 4))


def test_torchrun_cli_run_writes_once_and_scores_every_case(tmp_path):
    """`torchrun --nproc_per_node 2 -m ssl_bench run ...`: one run folder, one copy of each log line, every test
    case scored (sharded, gathered), status finished."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "ssl_bench", "run", "--method", "unet", "--preset", "smoke", "--out", str(tmp_path), "--device"]
    cmd += ["cpu", "--threads", "1", "--no-progress", "--set", "trainer.batch_size=4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p.parent for p in tmp_path.rglob("manifest.json")]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) and any('"type": "val"' in line for line in lines)
    summary = json.loads((run_dir / "eval" / "test" / "summary.json").read_text())
    from ssl_bench.training.runner import build_adapter, resolve_config

    n_test = len(build_adapter(resolve_config("unet", "cardiac-phantom", preset="smoke")).splits()["test"])
    assert summary["n_cases"] == n_test
    assert proc.stdout.count("run folder:") == 1  # rank 1 prints nothing
