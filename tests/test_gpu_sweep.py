"""benchmarks/gpu/sweep.sh on the CPU: its planning, and the smoke preset on the cardiac phantom (no GPU, no ACDC)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "benchmarks" / "gpu" / "sweep.sh"


def _load_driver():
    spec = importlib.util.spec_from_file_location("gpu_sweep", ROOT / "benchmarks" / "gpu" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_sweep"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sweep = _load_driver()


def sweep_env(out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSL_BENCH_ACDC"}
    env.update({"OUT": str(out), "DEVICE": "cpu", "DATASET": "cardiac-phantom", "PYTHON": sys.executable, **extra})
    return env


def read_plan(out: Path) -> dict:
    return json.loads((out / "plan.json").read_text())


# -- planning (no subprocess) --------------------------------------------------------------------------------------


def make_cell(index: int, method: str, full_epochs: int = 150, bases: dict | None = None) -> object:
    cell = sweep.Cell(index=index, method=method, seed=0, sets={}, line=index + 1, bases=bases or {})
    cell.full_epochs, cell.steps_per_epoch = full_epochs, 200
    return cell


def test_fraction_scales_each_schedule_and_its_pretraining():
    bcp = make_cell(0, "bcp", 200, {"params.pretrain_epochs": 50})
    assert sweep.scaled_epochs(bcp, 0.1) == (20, {"trainer.epochs": "20", "params.pretrain_epochs": "5"})
    # pre-training stays shorter than the run however small the fraction
    assert sweep.scaled_epochs(bcp, 0.001) == (2, {"trainer.epochs": "2", "params.pretrain_epochs": "1"})
    assert sweep.scaled_epochs(make_cell(1, "unet"), 1.0) == (150, {})  # the whole protocol: no --set at all


def test_estimated_fraction_fits_the_first_wave_and_later_cells_wait_for_room():
    model = sweep.Model(sec_per_iter=0.1, overhead_s=60.0, val_s=0.0)
    cells = [make_cell(0, "unet"), make_cell(1, "ua-mt"), make_cell(2, "ua-mt")]
    usable = 600.0
    f = sweep.choose_fraction(cells, model, jobs=2, waves=1, usable_s=usable)
    k = round(f * sweep.REFERENCE_EPOCHS)
    assert model.duration(cells[1], k) <= usable < model.duration(cells[1], k + 1)  # the largest that fits
    ends = sweep.simulate(cells, f, model, jobs=2, usable_s=usable)
    assert ends[0] < ends[1] <= usable
    assert ends[2] == float("inf")  # starts after unet, would end past the budget: not started
    cheap = sweep.simulate(cells, 0.2 * f, model, jobs=2, usable_s=usable)
    assert all(e <= usable for e in cheap)


def test_cells_file_order_and_errors(tmp_path):
    cells = sweep.read_cells(sweep.DEFAULT_CELLS)
    methods = [c.method for c in cells]
    step1 = ["unet", "fully-supervised", "mean-teacher", "ua-mt", "coranet"]
    assert methods[:15] == [m for m in step1 for _ in range(3)]
    assert [c.seed for c in cells[:3]] == [0, 1, 2]
    assert methods[15::3] == ["bcp", "unimatch", "abd", "cps"]
    bad = tmp_path / "cells.txt"
    bad.write_text("unet zero\n")
    with pytest.raises(sweep.SweepError, match="cells.txt:1"):
        sweep.read_cells(bad)
    bad.write_text("unet 0 trainer.epochs\n")
    with pytest.raises(sweep.SweepError, match="KEY=VALUE"):
        sweep.read_cells(bad)


def test_header_states_the_assumed_iteration_time():
    header = SWEEP.read_text()
    assert f"sec_per_iter = {sweep.PROFILES['ssl4mis']['sec_per_iter']:g} s" in header
    assert f"overhead_s = {sweep.PROFILES['ssl4mis']['overhead_s']:g} s" in header


# -- the script ----------------------------------------------------------------------------------------------------


def test_missing_acdc_fails_in_one_line_before_anything(tmp_path):
    out = tmp_path / "out"
    env = sweep_env(out, DATASET="acdc")
    proc = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: SSL_BENCH_ACDC is not set"), proc.stderr
    env["SSL_BENCH_ACDC"] = str(tmp_path / "nowhere")
    proc = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    cells = tmp_path / "cells.txt"
    cells.write_text("unet 0\nno-such-method 0\nmean-teacher 1\n")
    out = tmp_path / "out"
    env = sweep_env(out, DATASET="acdc", DEVICE="cuda")  # planning needs neither the data nor a GPU
    proc = subprocess.run(
        ["bash", str(SWEEP), "--dry-run", "--cells", str(cells), "--budget-min", "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "not registered" in proc.stderr and "SSL_BENCH_ACDC is not set" in proc.stderr
    text = proc.stdout
    assert "GPU sweep plan: preset ssl4mis, dataset acdc, device cuda" in text
    assert "fraction 0." in text and "estimated" in text
    assert "skip: method not registered" in text
    assert "--device cuda" in text and "--threads 2" in text and "--set trainer.epochs=" in text
    assert not out.exists()


def test_smoke_sweep_runs_exports_skips_and_stops_at_the_budget(tmp_path):
    """Two smoke cells (and an unknown method) run to their records; meanwhile a second sweep's endless cell is
    stopped by SIGINT at its budget's end and left resumable."""
    from ssl_bench.reporting.results import find_runs

    long_cells = tmp_path / "long.txt"
    long_cells.write_text("unet 2 trainer.epochs=100000\n")
    kill_out = tmp_path / "kill"
    killer = subprocess.Popen(
        ["bash", str(SWEEP), "--preset", "smoke", "--jobs", "1", "--threads", "1", "--budget-min", "0.75"]
        + ["--sec-per-iter", "0", "--overhead-s", "0", "--val-s", "0", "--cells", str(long_cells)],
        env=sweep_env(kill_out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the endless run starts training (its run folder exists) before the other sweep competes for the CPU
    deadline = time.monotonic() + 90
    while not list(kill_out.glob("runs/*/*/*/*/*/manifest.json")) and killer.poll() is None:
        assert time.monotonic() < deadline, "the endless run did not start within 90 s"
        time.sleep(0.5)
    training = bool(list(kill_out.glob("runs/*/*/*/*/*/manifest.json")))
    cells = tmp_path / "cells.txt"
    cells.write_text("unet 0\nno-such-method 0\nmean-teacher 1\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SWEEP), "--preset", "smoke", "--jobs", "2", "--threads", "1", "--budget-min", "5"]
        + ["--cells", str(cells), "--pack"],
        env=sweep_env(out),
        capture_output=True,
        text=True,
        timeout=600,
    )
    kill_stdout, kill_stderr = killer.communicate(timeout=600)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: method 'no-such-method' is not registered" in proc.stderr
    plan = read_plan(out)
    assert plan["counts"] == {"finished": 2, "skipped": 1}
    assert plan["fraction"] == 1.0 and plan["start"] and plan["end"] and plan["device"] == "cpu"
    done = [plan["cells"][0], plan["cells"][2]]
    assert plan["cells"][1]["status"] == "skipped"
    for cell in done:
        assert cell["status"] == "finished" and cell["exit_code"] == 0, cell
        assert "--device cpu" in cell["command"] and f"--out {out / 'runs'}" in cell["command"]
        assert (out / cell["log"]).is_file()
        record = out / cell["record"]
        assert (record / "eval" / "test" / "summary.json").is_file()
        assert not (record / "checkpoints").exists()
    runs = find_runs(out / "records", status="finished")
    assert sorted(r.get("method") for r in runs) == ["mean-teacher", "unet"]
    with tarfile.open(out / "sweep.tar.gz") as tar:
        names = tar.getnames()
    assert "plan.json" in names and any(n.endswith("summary.json") for n in names)
    assert not any("checkpoints" in n for n in names)

    assert killer.returncode == 0, kill_stdout + kill_stderr
    plan = read_plan(kill_out)
    (cell,) = plan["cells"]
    assert plan["stop_reason"].startswith("budget end")
    assert cell["status"] == "interrupted" and cell["signals"][0].startswith("SIGINT"), cell
    assert cell["exit_code"] != 0 and cell["record"] is None
    assert not any((kill_out / "records").iterdir())
    assert training and cell["run_dir"], "the endless run had not started training at the budget's end"
    run_dir = kill_out / cell["run_dir"]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert cell["resume"] == f"ssl-bench resume {run_dir}"
