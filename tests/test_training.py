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
import torch
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

    seconds_at_checkpoint = torch.load(run / "checkpoints/last.pt", weights_only=False)["train_seconds"]
    assert seconds_at_checkpoint > 0
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
    # training time counts both segments: the log's time goes on from the checkpoint, the manifest sums them
    times = [json.loads(line).get("time") for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [t for t in times if t is not None]  # train lines carry a time, val and epoch lines none
    assert times == sorted(times)
    assert manifest["timings"]["train_s"] > seconds_at_checkpoint


def test_logged_train_seconds_sums_the_segments_of_an_older_log(tmp_path):
    """Logs written before the time was counted over resumes restart it at 0 in each resumed segment."""
    from ssl_bench.training.trainer import logged_train_seconds

    log = tmp_path / "metrics.jsonl"
    assert logged_train_seconds(log) == 0.0
    times = [1.0, 2.5, 4.0, 0.5, 3.0, 0.25, 1.5]  # three segments: 4.0 + 3.0 + 1.5
    lines = [json.dumps({"type": "train", "step": i, "time": t}) for i, t in enumerate(times)]
    log.write_text("\n".join([*lines[:3], '{"type": "val", "step": 2}', *lines[3:], '{"type": "tr']) + "\n")
    assert logged_train_seconds(log) == pytest.approx(8.5)
    log.write_text("".join(json.dumps({"time": t}) + "\n" for t in (1.0, 2.0, 2.0, 5.0)))  # one segment
    assert logged_train_seconds(log) == pytest.approx(5.0)


def test_resume_from_a_checkpoint_without_train_seconds_takes_them_from_the_log(tmp_path):
    """Checkpoints written before train_seconds was stored: the resumed run's time counts the earlier segment."""
    run = start_run(
        resolve_config("unet", "cardiac-phantom", preset="smoke"), out=tmp_path, progress=False, echo=lambda s: None
    ).run_dir
    last = run / "checkpoints/last.pt"
    state = torch.load(last, weights_only=False)
    del state["train_seconds"]
    torch.save(state, last)
    logged = max(
        json.loads(line)["time"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "time" in json.loads(line)
    )
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["timings"]  # as a killed run's manifest: only the checkpoint and the log know the earlier time
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    resume_run(run, progress=False, echo=lambda s: None)
    assert json.loads((run / "manifest.json").read_text())["timings"]["train_s"] >= logged > 0


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
