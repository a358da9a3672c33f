"""Issue #18, run side: every case a run touches is checked before its folder exists; run folders are atomic,
locked and resumable under kills, concurrency and a full disk; one-line errors for bad CLI input."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import run_cli_subprocess
from test_datasets_real import official_full, write_ssl4mis  # noqa: F401 - official_full is a fixture

from ssl_bench.core.errors import ConfigError, DataError, RunDirError
from ssl_bench.core.io import atomic_write_text
from ssl_bench.training import runner
from ssl_bench.training.runner import eval_run, resolve_config, resume_run, start_run

LOCK_NAME = ".lock"  # ssl_bench.training.rundir.LOCK_NAME, spelled out so this file imports on older code
TRAIN, VAL, TEST = ["patient001", "patient002", "patient003"], ["patient004"], ["patient005"]


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in Path(out).rglob("manifest.json"))


def _tiny_acdc(tmp_path: Path, train=TRAIN, val=VAL) -> Path:
    return write_ssl4mis(tmp_path / "acdc", train, val, TEST)


def _acdc_cfg(root: Path):
    return resolve_config("unet", "acdc", preset="smoke", labeled=1, data_root=str(root))


def _rewrite(path: Path, image=None, label=None, drop_label=False) -> None:
    with h5py.File(path, "r") as fh:
        img, lab = fh["image"][()], fh["label"][()]
    with h5py.File(path, "w") as fh:
        fh.create_dataset("image", data=img if image is None else image(img))
        if not drop_label:
            fh.create_dataset("label", data=lab if label is None else label(lab))


def _nan(img):
    img = img.astype(np.float32)
    img[0, 0, 0] = np.nan
    return img


TEST_CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:200]),
    "no-label": lambda p: _rewrite(p, drop_label=True),
    "label-7": lambda p: _rewrite(p, label=lambda lab: np.where(lab == 1, 7, lab).astype(np.uint8)),
    "float-label": lambda p: _rewrite(p, label=lambda lab: lab.astype(np.float32) * 0.5),
    "nan-image": lambda p: _rewrite(p, image=_nan),
    "shape-mismatch": lambda p: _rewrite(p, label=lambda lab: lab[:, :-1]),
}


@pytest.mark.parametrize("kind", sorted(TEST_CORRUPTIONS))
def test_bad_test_case_fails_before_the_run_folder_exists(tmp_path, kind):
    """Item 1/2: a bad *test* file is found before training (it used to fail after the whole run, or never)."""
    root = _tiny_acdc(tmp_path)
    bad = root / "data" / "patient005_frame02.h5"
    TEST_CORRUPTIONS[kind](bad)
    with pytest.raises(DataError) as err:
        start_run(_acdc_cfg(root), out=tmp_path / "out", progress=False, echo=lambda s: None)
    message = str(err.value)
    assert str(bad) in message and "test case patient005_frame02" in message
    assert "checkpoint" not in message
    if kind == "nan-image":
        assert "NaN" in message
    assert _run_dirs(tmp_path / "out") == []


def test_nan_training_slice_names_the_file_and_data_check_reports_it(tmp_path, cli, capsys):
    """Item 2: a NaN training slice is a data error naming the file; `data check` no longer calls it OK."""
    root = _tiny_acdc(tmp_path)
    bad = root / "data" / "slices" / "patient002_frame01_slice_1.h5"
    _rewrite(bad, image=lambda img: _nan(img[None])[0])
    with pytest.raises(DataError, match="NaN") as err:
        start_run(_acdc_cfg(root), out=tmp_path / "out", progress=False, echo=lambda s: None)
    assert str(bad) in str(err.value)
    assert cli("data", "check", "acdc", "--data-root", root) != 0
    out = capsys.readouterr().out
    assert "NaN" in out and bad.name in out and "OK: no problems" not in out


def test_split_list_naming_a_missing_patient_is_an_error(tmp_path):
    """Item 3: a train.list patient without data used to be counted in the labelled budget silently."""
    root = _tiny_acdc(tmp_path, train=TRAIN)
    lists = root / "train.list"
    lists.write_text("patient009_frame01\npatient009_frame02\n" + lists.read_text())
    with pytest.raises(DataError, match="patient009"):
        start_run(_acdc_cfg(root), out=tmp_path / "out", progress=False, echo=lambda s: None)
    assert _run_dirs(tmp_path / "out") == []


def test_val_list_naming_a_missing_patient_fails_before_training(tmp_path):
    root = _tiny_acdc(tmp_path)
    (root / "val.list").write_text("patient008_frame01\n")
    with pytest.raises(DataError, match="patient008_frame01"):
        start_run(_acdc_cfg(root), out=tmp_path / "out", progress=False, echo=lambda s: None)
    assert _run_dirs(tmp_path / "out") == []


def test_missing_slices_folder_is_named(tmp_path):
    """Item 14: a missing data/slices/ folder is named (it used to surface as a missing slice file)."""
    root = _tiny_acdc(tmp_path)
    (root / "data" / "slices").rename(root / "elsewhere")
    with pytest.raises(DataError, match=r"data/slices"):
        _acdc_cfg(root) and runner.build_adapter(_acdc_cfg(root))


# -- run folders ----------------------------------------------------------------------------------------------


def _smoke(seed: int = 0):
    return resolve_config("unet", "cardiac-phantom", preset="smoke", seed=seed)


def test_run_folder_appears_with_manifest_and_config_or_not_at_all(tmp_path, monkeypatch):
    """Item 4: a kill while the folder's first files are written leaves no half folder (it used to leave
    config.yaml or a manifest alone, which `resume` called "not a run folder")."""

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "dump_yaml", killed)
    with pytest.raises(KeyboardInterrupt):
        start_run(_smoke(), out=tmp_path, progress=False, echo=lambda s: None)
    visible = [
        p for p in tmp_path.rglob("*") if not any(part.startswith(".") for part in p.relative_to(tmp_path).parts)
    ]
    assert not [p for p in visible if p.is_file()], visible


def test_kill_right_after_the_folder_appears_is_resumable(tmp_path):
    """Item 4, for real: SIGKILL as soon as the run folder exists, then `resume` finishes the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ssl_bench", "run", "--method", "unet", "--preset", "smoke", "--threads", "1"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path), "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    found: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        found = [p for p in tmp_path.glob("*/*/*/*/*") if p.is_dir() and not p.name.startswith(".")]
        if found:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert found, "the run folder never appeared"
    done = run_cli_subprocess("resume", found[0], "--threads", "1", "--no-progress", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert json.loads((found[0] / "manifest.json").read_text())["status"] == "finished"
    assert not (found[0] / LOCK_NAME).exists()


def test_resume_refuses_a_live_lock_and_takes_over_a_dead_one(tmp_path):
    """Item 5: two writers used to append to one metrics.jsonl; now the second refuses, naming PID and host."""
    run = start_run(_smoke(), out=tmp_path, progress=False, echo=lambda s: None).run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    atomic_write_text(run / "manifest.json", json.dumps({**manifest, "status": "interrupted"}))
    lock = {"pid": os.getpid(), "host": os.uname().nodename, "since": "now", "purpose": "run"}
    (run / LOCK_NAME).write_text(json.dumps(lock))
    with pytest.raises(RunDirError, match=rf"PID {os.getpid()} on host"):
        resume_run(run, progress=False, echo=lambda s: None)
    with pytest.raises(RunDirError, match=rf"PID {os.getpid()}"):
        eval_run(run, progress=False, echo=lambda s: None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({**lock, "pid": dead.pid}))
    assert resume_run(run, progress=False, echo=lambda s: None).summary is not None
    assert not (run / LOCK_NAME).exists()


def test_identical_runs_planned_in_the_same_second_get_distinct_folders(tmp_path, monkeypatch):
    """Item 6: the second of two runs planned in the same second used to die with FileExistsError."""
    planned = runner.plan_run_dir(_smoke(), tmp_path)
    monkeypatch.setattr(runner, "plan_run_dir", lambda cfg, out: planned)
    first = start_run(_smoke(), out=tmp_path, progress=False, echo=lambda s: None).run_dir
    second = start_run(_smoke(), out=tmp_path, progress=False, echo=lambda s: None).run_dir
    assert first == planned and second == planned.with_name(planned.name + "-2")
    for run in (first, second):
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "finished" and (run / "eval/test/summary.json").is_file()


def test_create_run_folder_never_reuses_a_taken_name(tmp_path):
    from ssl_bench.training.rundir import create_run_folder

    target = tmp_path / "runs" / "a"
    made = [create_run_folder(target, lambda d: (d / "manifest.json").write_text("{}")) for _ in range(3)]
    assert [p.name for p in made] == ["a", "a-2", "a-3"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a", "a-2", "a-3"]


def _log_lines(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(x).items() if k != "time"}
        for x in (run / "metrics.jsonl").read_text().splitlines()
    ]


def test_resume_from_step_0_restarts_the_log_and_removes_orphan_tmp_files(tmp_path, monkeypatch):
    """Item 7: a resume without a checkpoint used to re-append the log (8 -> 16 lines)."""
    full = start_run(_smoke(), out=tmp_path / "a", progress=False, echo=lambda s: None).run_dir
    from ssl_bench.training.trainer import Trainer

    original = Trainer.save_checkpoint

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        start_run(_smoke(), out=tmp_path / "b", progress=False, echo=lambda s: None)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    (run,) = _run_dirs(tmp_path / "b")
    assert not (run / "checkpoints" / "last.pt").exists() and _log_lines(run)
    orphan = run / "checkpoints" / ".last.pt.abcd1234.tmp"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"half a checkpoint")
    resume_run(run, progress=False, echo=lambda s: None)
    assert _log_lines(run) == _log_lines(full)
    assert not orphan.exists()


def test_eval_without_best_checkpoint_keeps_the_val_selected_scores(tmp_path):
    """Item 8: eval of a run without best.pt used to overwrite eval/test with the last model's scores."""
    run = start_run(_smoke(), out=tmp_path, progress=False, echo=lambda s: None).run_dir
    before = (run / "eval/test/summary.json").read_text()
    assert json.loads(before)["checkpoint"].startswith("best-val")
    (run / "checkpoints" / "best.pt").unlink()
    printed: list[str] = []
    eval_run(run, progress=False, echo=printed.append)
    assert (run / "eval/test/summary.json").read_text() == before
    assert json.loads((run / "eval/test-last/summary.json").read_text())["checkpoint"].startswith("last")
    assert any("no checkpoints/best.pt" in p for p in printed)


def test_run_files_honour_the_umask(tmp_path):
    """Item 9: files were -rw------- (mkstemp) whatever the umask."""
    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "x.json", "{}")
        run = start_run(_smoke(), out=tmp_path / "runs", progress=False, echo=lambda s: None).run_dir
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o664
    for name in ("manifest.json", "config.yaml", "checkpoints/last.pt", "eval/test/summary.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o664, name
    assert run.stat().st_mode & 0o777 == 0o775


def test_disk_full_is_one_clear_error_and_the_run_stays_resumable(tmp_path, monkeypatch):
    """Item 13: ENOSPC while checkpointing used to end in a traceback (and a failing manifest write)."""
    from ssl_bench.training import trainer as trainer_module

    real = trainer_module.atomic_torch_save
    calls = {"n": 0}

    def full_disk(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(obj, path)

    monkeypatch.setattr(trainer_module, "atomic_torch_save", full_disk)
    with pytest.raises(RunDirError, match="disk full") as err:
        start_run(_smoke(), out=tmp_path, progress=False, echo=lambda s: None)
    assert "ssl-bench resume" in str(err.value)
    (run,) = _run_dirs(tmp_path)
    monkeypatch.setattr(trainer_module, "atomic_torch_save", real)
    assert resume_run(run, progress=False, echo=lambda s: None).summary is not None


# -- one line, exit 2 -----------------------------------------------------------------------------------------


def _one_line_error(cli, capsys, *args) -> str:
    code = cli(*args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--device", "banana"], "banana"),
        (["--threads", "-2"], "--threads"),
        (["--threads", "0"], "--threads"),
        (["--out", "/dev/null"], "/dev/null"),
        (["--out", "/proc/ssl-bench-runs"], "/proc"),
    ],
)
def test_bad_runtime_options_are_one_line_errors(tmp_path, cli, capsys, extra, needle):
    args = ["run", "--method", "unet", "--preset", "smoke", "--out", str(tmp_path / "runs"), *extra]
    assert needle in _one_line_error(cli, capsys, *args)
    assert _run_dirs(tmp_path) == []


def test_out_that_is_a_file_is_refused_before_work(tmp_path, cli, capsys):
    (tmp_path / "file").write_text("x")
    err = _one_line_error(cli, capsys, "run", "--method", "unet", "--preset", "smoke", "--out", tmp_path / "file")
    assert "is a file" in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    return start_run(_smoke(), out=out, progress=False, echo=lambda s: None).run_dir


@pytest.mark.parametrize("command", ["resume", "eval"])
@pytest.mark.parametrize("content", ["", '{"status": "runn'])
def test_truncated_manifest_is_one_line(tmp_path, cli, capsys, finished_run, command, content):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "manifest.json").write_text(content)
    assert "manifest.json" in _one_line_error(cli, capsys, command, run)


def test_bad_value_in_a_runs_config_names_the_file(tmp_path, cli, capsys, finished_run):
    """Item 14: a bad value in the run's own config.yaml used to be reported like a --set key."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    text = (run / "config.yaml").read_text()
    for old, new in (("epochs: 2", "epochs: two"), ("select: best-val", "select: banana")):
        (run / "config.yaml").write_text(text.replace(old, new))
        assert str(run / "config.yaml") in _one_line_error(cli, capsys, "eval", run)


def test_unknown_device_from_python_is_a_config_error():
    with pytest.raises(ConfigError, match="banana"):
        runner.pick_device("banana")


@pytest.mark.parametrize("damage", ["shape-mismatch", "missing-patient-folder"])
def test_official_layout_test_case_damage_fails_before_training(tmp_path, official_full, damage):  # noqa: F811
    """Item 1 on the official NIfTI layout: a test patient's label of another shape, or its folder missing."""
    import shutil

    import nibabel as nib
    from test_datasets_real import SPLIT

    root = tmp_path / "acdc"
    shutil.copytree(official_full, root)
    patient = SPLIT.split["test"][0]
    pdir = root / "database" / "training" / patient
    if damage == "missing-patient-folder":
        shutil.rmtree(pdir)
    else:
        gt = sorted(pdir.glob("*_gt.nii.gz"))[0]
        img = nib.load(str(gt))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), str(gt))
    cfg = resolve_config("unet", "acdc", preset="smoke", labeled=2, data_root=str(root))
    with pytest.raises(DataError, match=patient):
        start_run(cfg, out=tmp_path / "out", progress=False, echo=lambda s: None)
    assert _run_dirs(tmp_path / "out") == []


def test_a_patient_in_two_splits_fails_before_training(tmp_path):
    """Item 1: a test volume also listed for training (test data leaking into training) was accepted silently."""
    root = _tiny_acdc(tmp_path)
    (root / "test.list").write_text("patient001_frame01\n")
    with pytest.raises(DataError, match="patient001 is in both the train and the test split"):
        start_run(_acdc_cfg(root), out=tmp_path / "out", progress=False, echo=lambda s: None)
    assert _run_dirs(tmp_path / "out") == []


def test_yaml_errors_and_check_names_are_one_line(tmp_path, cli, capsys, finished_run):
    """Sweep findings: PyYAML's multi-line errors reached the user as several lines; `check --estimator nope`
    reported "0 passed, 2 failed" (exit 1) instead of an unknown name."""
    import shutil

    (tmp_path / "c.yaml").write_text("trainer: [epochs\n")
    args = ["run", "--method", "unet", "--preset", "smoke", "--config", tmp_path / "c.yaml", "--out", tmp_path]
    assert "line 2" in _one_line_error(cli, capsys, *args)
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "config.yaml").write_text("a: [b\n")
    assert "config.yaml" in _one_line_error(cli, capsys, "resume", run)
    assert "nope" in _one_line_error(cli, capsys, "check", "--method", "coranet", "--estimator", "nope")
