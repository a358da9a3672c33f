"""End to end: a smoke run writes a complete run folder; kill + resume equals an uninterrupted run; NaN losses
stop with a clear error; bad input leaves no run folder."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli_subprocess

from ssl_bench.core.errors import DataError, TrainingError
from ssl_bench.training.runner import eval_run, resolve_config, resume_run, start_run


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.rglob("manifest.json"))


def test_smoke_run_writes_complete_run_folder(tmp_path):
    cfg = resolve_config("unet", "cardiac-phantom", preset="smoke", seed=1)
    printed: list[str] = []
    result = start_run(cfg, out=tmp_path, progress=False, echo=printed.append)
    run = result.run_dir
    assert run.parent.name == "seed1" and run.parent.parent.name == "lab0.2"
    assert run.parent.parent.parent.name == "unet" and run.parents[3].name == "cardiac-phantom"
    for name in (
        "config.yaml",
        "manifest.json",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "eval/test/per_case.csv",
        "eval/test/summary.json",
    ):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["timings"]["train_s"] > 0
    assert manifest["data"]["labelled_patients"] and manifest["parameters"]["train"] > 0
    summary = json.loads((run / "eval/test/summary.json").read_text())
    assert set(summary["classes"]) == {"1", "2", "3"}
    assert summary["empty_policy"] and summary["spacing_unit"] == "mm"
    rows = list(csv.DictReader((run / "eval/test/per_case.csv").open()))
    assert len(rows) == 3 * summary["n_cases"]
    assert {"dice", "hd95", "hd95_vox", "asd", "tp", "n_ref"} <= set(rows[0])
    assert any("Dice % per class" in p for p in printed) and any(str(run) in p for p in printed)
    # eval re-scores the same model to the same numbers
    again = eval_run(run, "test", progress=False, echo=lambda s: None)
    assert again.summary["foreground_mean"]["dice"] == pytest.approx(summary["foreground_mean"]["dice"], abs=1e-12)
    # resume of a finished run is a no-op
    assert resume_run(run, progress=False, echo=lambda s: None).summary is not None


def test_missing_data_root_leaves_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_ACDC", raising=False)
    cfg = resolve_config("unet", "acdc", preset="smoke")
    with pytest.raises(DataError, match=r"needs its data folder: pass --data-root DIR or set \$SSL_BENCH_ACDC"):
        start_run(cfg, out=tmp_path, progress=False, echo=lambda s: None)
    cfg = resolve_config("unet", "acdc", preset="smoke", data_root=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="is not a folder"):
        start_run(cfg, out=tmp_path, progress=False, echo=lambda s: None)
    assert not _run_dirs(tmp_path)


NAN_PLUGIN = '''
import torch
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.supervised import Supervised

@METHODS.register("nan-after-two")
class NanAfterTwo(Supervised):
    """Returns a NaN loss from step 2 on."""

    def training_step(self, batch_l, batch_u, step):
        out = super().training_step(batch_l, batch_u, step)
        if step.step >= 2:
            out["loss"] = out["loss"] * float("nan")
        return out
'''


def test_nan_loss_stops_with_actionable_error(tmp_path):
    from ssl_bench.core.registry import load_plugin_file

    plugin = tmp_path / "nan_plugin.py"
    plugin.write_text(NAN_PLUGIN)
    load_plugin_file(plugin)
    cfg = resolve_config("nan-after-two", "cardiac-phantom", preset="smoke")
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 .*last.pt.*optim.lr"):
        start_run(cfg, out=tmp_path, progress=False, echo=lambda s: None)
    (run,) = _run_dirs(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "non-finite loss" in manifest["error"]
    assert (run / "plugins").is_dir() and manifest["plugins"]


SLOW_PLUGIN = '''
import time
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.supervised import Supervised

@METHODS.register("slow-unet")
class SlowUNet(Supervised):
    """U-Net that sleeps 40 ms per step, so that a test can kill it mid-training."""

    def training_step(self, batch_l, batch_u, step):
        time.sleep(0.04)
        return super().training_step(batch_l, batch_u, step)
'''

# fmt: off
KILL_ARGS = ["--method", "slow-unet", "--preset", "smoke", "--seed", "5", "--threads", "1", "--no-progress",
             "--set", "trainer.epochs=3", "--set", "trainer.iters_per_epoch=8", "--set", "trainer.ckpt_every=3"]
# fmt: on


def _per_case(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "eval/test/per_case.csv").open()))


def test_killed_run_resumes_to_identical_result(tmp_path):
    """SIGKILL mid-training, `ssl-bench resume`, compare with an uninterrupted run of the same config."""
    ref_out, kill_out = tmp_path / "ref", tmp_path / "kill"
    plugin = tmp_path / "slow_plugin.py"
    plugin.write_text(SLOW_PLUGIN)
    done = run_cli_subprocess("run", *KILL_ARGS, "--plugin", plugin, "--out", ref_out)
    assert done.returncode == 0, done.stderr
    (ref_run,) = _run_dirs(ref_out)

    proc = subprocess.Popen(
        [sys.executable, "-m", "ssl_bench", "run", *KILL_ARGS, "--plugin", str(plugin), "--out", str(kill_out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        logs = list(kill_out.rglob("metrics.jsonl"))
        if logs and list(kill_out.rglob("last.pt")):
            steps = [json.loads(line)["step"] for line in logs[0].read_text().splitlines() if line.strip()]
            if steps and max(steps) >= 10:
                proc.send_signal(signal.SIGKILL)
                killed_at = max(steps)
                break
        time.sleep(0.05)
    proc.wait(timeout=30)
    if killed_at is None:
        pytest.fail(f"the run ended before it could be killed (rc={proc.returncode}): {proc.stderr.read()[-500:]}")
    (run,) = _run_dirs(kill_out)
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"  # killed: never marked finished
    assert not (run / "eval/test/summary.json").exists()

    plugin.unlink()  # resume must reload the plugin copy kept in the run folder
    resumed = run_cli_subprocess("resume", run, "--threads", "1", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["resumed"]) == 1
    assert 0 < manifest["resumed"][0]["step"] <= killed_at
    ref_rows, rows = _per_case(ref_run), _per_case(run)
    assert len(rows) == len(ref_rows)
    for a, b in zip(ref_rows, rows):
        for key in ("dice", "hd95", "asd", "tp", "fp", "fn"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-9, nan_ok=True), (a["case"], key)
    # the log has no duplicated or missing steps after the resume
    steps = [
        json.loads(line)["step"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "train"
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 24


def test_eval_with_medpy_backend_matches_and_keeps_the_runs_numbers(tmp_path):
    cfg = resolve_config("unet", "cardiac-phantom", preset="smoke", seed=2)
    run = start_run(cfg, out=tmp_path, progress=False, echo=lambda s: None).run_dir
    ours = json.loads((run / "eval/test/summary.json").read_text())
    medpy = eval_run(run, "test", metrics_backend="medpy", progress=False, echo=lambda s: None).summary
    assert (run / "eval/test-medpy/summary.json").is_file()
    assert json.loads((run / "eval/test/summary.json").read_text()) == ours  # untouched
    for k, cls in ours["classes"].items():
        for m in ("dice", "hd95", "asd", "assd", "hd95_vox"):
            a, b = cls[m]["mean"], medpy["classes"][k][m]["mean"]
            assert (a != a and b != b) or a == pytest.approx(b, abs=1e-6), (k, m)
