"""Run logs: train.log lines (and on stderr off a terminal), the CSV and TensorBoard loggers read back, no duplicated
lines or events after a crash and resume, bad logger names refused before a run folder exists, W&B offline."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from ssl_bench.cli.main import main
from ssl_bench.core.errors import ConfigError
from ssl_bench.reporting.tables.cells import expected_config, matches
from ssl_bench.training import loggers
from ssl_bench.training.runner import resolve_config, resume_run, start_run
from ssl_bench.training.trainer import Trainer

# 3 epochs x 8 steps, a checkpoint every 3 steps, a log record every step
SETS = {"trainer.epochs": 3, "trainer.iters_per_epoch": 8, "trainer.ckpt_every": 3}


def _cfg(**extra):
    return resolve_config("unet", "cardiac-phantom", preset="smoke", seed=3, overrides={**SETS, **extra})


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _record_lines(run: Path) -> list[str]:
    """train.log lines of records, without the timestamp and the it/s + ETA tail (wall-clock dependent)."""
    out = []
    for line in (run / "train.log").read_text().splitlines():
        body = re.sub(r"^\[[^\]]*\] ", "", line)
        if body.startswith(("train ", "val ", "epoch ")):
            out.append(body.split(" | ")[0])
    return out


def _csv_scalars(run: Path) -> list[tuple[int, str, float]]:
    with (run / "scalars.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == list(loggers.CSV_COLUMNS)
    return [(int(r["step"]), r["tag"], float(r["value"])) for r in rows]


def _tb_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(run: Path) -> list[tuple[int, str, float]]:
    return [(r["step"], tag, v) for r in _records(run) for tag, v in loggers.scalars(r).items()]


def test_smoke_run_writes_log_lines_csv_and_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = start_run(_cfg(**{"trainer.loggers": "tensorboard,csv"}), out=tmp_path, progress=None, echo=print).run_dir
    records = _records(run)
    kinds = [r["type"] for r in records]
    assert kinds.count("train") == 24 and kinds.count("val") == 3
    lines = _record_lines(run)
    assert len(lines) == len(records)
    assert lines[0].startswith("train step 1/24 (4%) stage=train loss=")
    val = next(line for line in lines if line.startswith("val "))
    assert re.match(r"val step 8/24 \(33%\) stage=train Dice \(fg\) [0-9.e-]+ \(best [0-9.e-]+\)", val), val
    full = (run / "train.log").read_text().splitlines()
    assert full[0].endswith("start at step 0/24") and re.search(r"\| [0-9.]+ it/s, ETA \d+:\d\d:\d\d$", full[1])
    # stdout is not a terminal here: the same lines went to stderr
    assert capsys.readouterr().err.splitlines() == full
    # the CSV and the event file hold exactly the scalars of metrics.jsonl
    expected = _expected(run)
    assert {"train/loss", "train/lr", "val/dice_fg"} <= {tag for _, tag, _ in expected}
    assert _csv_scalars(run) == expected
    tb = _tb_scalars(run)
    assert set(tb) == {tag for _, tag, _ in expected}
    for tag, points in tb.items():
        want = [(s, v) for s, t, v in expected if t == tag]
        assert [s for s, _ in points] == [s for s, _ in want], tag
        assert [v for _, v in points] == pytest.approx([v for _, v in want], rel=1e-6), tag


def test_resume_after_a_crash_neither_duplicates_nor_loses_log_lines(tmp_path, monkeypatch):
    """Crash at step 11 (checkpoint at step 9): records 10-11 were logged past the checkpoint. After the resume,
    train.log, scalars.csv and TensorBoard equal an uninterrupted run's, and so do the test scores."""
    pytest.importorskip("tensorboard")
    cfg = _cfg(**{"trainer.loggers": "tensorboard,csv"})
    ref = start_run(cfg, out=tmp_path / "ref", progress=False, echo=lambda s: None)

    original = Trainer._train_step

    def crash_at_11(self, stage):
        if self.step == 11:
            raise RuntimeError("simulated crash")
        return original(self, stage)

    monkeypatch.setattr(Trainer, "_train_step", crash_at_11)
    with pytest.raises(RuntimeError, match="simulated crash"):
        start_run(cfg, out=tmp_path / "crash", progress=False, echo=lambda s: None)
    (run,) = [p.parent for p in (tmp_path / "crash").rglob("manifest.json")]
    assert max(r["step"] for r in _records(run)) == 11 and "train step 11/24" in (run / "train.log").read_text()
    monkeypatch.setattr(Trainer, "_train_step", original)
    resumed = resume_run(run, progress=False, echo=lambda s: None)

    assert resumed.summary["foreground_mean"]["dice"] == ref.summary["foreground_mean"]["dice"]
    assert _record_lines(run) == _record_lines(ref.run_dir)
    assert "resume at step 9/24" in (run / "train.log").read_text()
    assert _csv_scalars(run) == _csv_scalars(ref.run_dir) == _expected(run)
    assert _tb_scalars(run) == _tb_scalars(ref.run_dir)


def test_unknown_or_missing_logger_is_refused_before_a_run_folder_exists(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="unknown logger 'tensorbord'; use any of tensorboard, csv, wandb"):
        _cfg(**{"trainer.loggers": "tensorbord"})
    rc = main(["run", "--method", "unet", "--preset", "smoke", "--logger", "csv,nope", "--out", str(tmp_path)])
    assert rc == 2 and "unknown logger 'nope'" in capsys.readouterr().err
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda n: None if n == "tensorboard" else real(n))
    with pytest.raises(ConfigError, match=r"needs the 'tensorboard' package.*pip install 'ssl-bench\[tensorboard\]'"):
        _cfg(**{"trainer.loggers": "tensorboard"})
    assert not any(tmp_path.iterdir())


def test_loggers_do_not_change_which_table_cell_a_run_fills():
    plain, logged = _cfg(), _cfg(**{"trainer.loggers": "tensorboard,csv"})
    assert logged.trainer.loggers == ("tensorboard", "csv")
    flat = {"trainer.loggers": ["csv"], **{k: v for k, v in expected_config(logged).items()}}

    class Run:
        def get(self, key, default=None):
            return flat.get(key, default)

    assert "trainer.loggers" not in expected_config(plain) and matches(Run(), expected_config(plain))


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = start_run(_cfg(**{"trainer.loggers": "wandb"}), out=tmp_path, progress=False, echo=lambda s: None).run_dir
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert offline and offline[0].stat().st_size > 0


def test_wandb_logger_wiring_with_a_stand_in_module(tmp_path, monkeypatch):
    """Without the wandb package: a stand-in module records what the logger asks of W&B."""
    import importlib.machinery
    import sys
    import types

    calls: list[tuple] = []

    class FakeRun:
        def log(self, data, step):
            calls.append(("log", step, dict(data)))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = start_run(_cfg(**{"trainer.loggers": "wandb"}), out=tmp_path, progress=False, echo=lambda s: None).run_dir
    (init,) = [c[1] for c in calls if c[0] == "init"]
    assert init["resume"] == "allow" and init["dir"] == str(run) and init["config"]["seed"] == 3
    logged = [(step, tag, v) for c in calls if c[0] == "log" for step, data in [c[1:]] for tag, v in data.items()]
    assert logged == _expected(run) and calls[-1] == ("finish",)


def test_a_restart_without_checkpoint_drops_the_killed_attempts_lines(tmp_path, monkeypatch):
    """Killed before its first checkpoint, a run restarts from step 0: no line of the first attempt survives."""
    cfg = _cfg(**{"trainer.ckpt_every": 100, "trainer.loggers": "csv"})
    original = Trainer._train_step

    def crash_at_5(self, stage):
        if self.step == 5:
            raise RuntimeError("simulated crash")
        return original(self, stage)

    monkeypatch.setattr(Trainer, "_train_step", crash_at_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        start_run(cfg, out=tmp_path, progress=False, echo=lambda s: None)
    (run,) = [p.parent for p in tmp_path.rglob("manifest.json")]
    assert not (run / "checkpoints/last.pt").exists() and len(_records(run)) == 5
    monkeypatch.setattr(Trainer, "_train_step", original)
    resume_run(run, progress=False, echo=lambda s: None)
    steps = [r["step"] for r in _records(run) if r["type"] == "train"]
    assert steps == list(range(1, 25))
    assert [ln.split()[2] for ln in _record_lines(run) if ln.startswith("train ")] == [f"{s}/24" for s in steps]
    assert _csv_scalars(run) == _expected(run)
