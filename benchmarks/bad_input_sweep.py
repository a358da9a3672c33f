"""Bad-input sweep through the CLI (issue #18): every kind of bad input a user can give, each in a subprocess, each
outcome classified as

* ``clear``: exit 2 (``data check``: non-zero) with a one-line ``error: ...`` (or argparse's usage + error line)
  that names the offending value, option or file;
* ``vague``: refused, but the message does not name what is wrong (or spans several lines);
* ``traceback``: a Python traceback reached the user;
* ``silent``: accepted (exit 0) although the input is bad, or still running at the timeout.

    python benchmarks/bad_input_sweep.py [--jobs 2] [--only SUBSTRING] [--json FILE]

Light: smoke preset, ``--threads 1``, the built-in phantom and a tiny synthetic ACDC (SSL4MIS layout) in a temp
folder. Prints one line per case that is not clear, then the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

SMOKE = ["--preset", "smoke", "--threads", "1", "--no-progress"]


@dataclass
class Case:
    name: str
    args: Callable[[Path], list]  # tmp folder -> CLI arguments (sets up its files)
    needle: str  # what the message must name (case-insensitive)
    report: bool = False  # a report command (data check): non-zero exit and the needle anywhere in its output


# -- fixtures -------------------------------------------------------------------------------------------------


def _volume(seed: int, z: int = 2, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.random((z, size, size)).astype(np.float32)
    label = np.zeros((z, size, size), np.uint8)
    label[:, 3:7, 3:7], label[:, 8:11, 3:6], label[:, 4:9, 9:13] = 1, 2, 3
    return image, label


def _h5(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        for key, value in arrays.items():
            fh.create_dataset(key, data=value)


def make_acdc(root: Path) -> Path:
    """A tiny ACDC copy in the SSL4MIS layout: 3 train, 1 val, 1 test patient (2 frames of 2 x 16 x 16)."""
    splits = {"train": ["patient001", "patient002", "patient003"], "val": ["patient004"], "test": ["patient005"]}
    vols = {s: [f"{p}_frame0{k}" for p in ps for k in (1, 2)] for s, ps in splits.items()}
    rows = []
    for i, vid in enumerate(v for s in ("train", "val", "test") for v in vols[s]):
        image, label = _volume(i)
        if vid in vols["train"]:
            for k in range(image.shape[0]):
                rows.append(f"{vid}_slice_{k + 1}")
                _h5(root / "data" / "slices" / f"{vid}_slice_{k + 1}.h5", image=image[k], label=label[k])
        else:
            _h5(root / "data" / f"{vid}.h5", image=image, label=label)
    for split, ids in vols.items():
        (root / f"{split}.list").write_text("\n".join(ids) + "\n")
    (root / "train_slices.list").write_text("\n".join(rows) + "\n")
    return root


class Fixtures:
    """Shared inputs, made once: the tiny ACDC, one finished smoke run, label maps for `metrics`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.acdc = make_acdc(tmp / "acdc")
        done = subprocess.run(_cli("run", "--method", "unet", *SMOKE, "--out", tmp / "runs"), capture_output=True)
        if done.returncode:
            raise SystemExit(f"the reference smoke run failed:\n{done.stderr.decode()}")
        (self.run,) = [p.parent for p in (tmp / "runs").rglob("manifest.json")]
        self.ref = np.zeros((3, 8, 8), np.uint8)
        self.ref[1, 2:5, 2:5] = 1
        np.save(tmp / "ref.npy", self.ref)
        np.save(tmp / "pred.npy", self.ref)
        self.n = 0
        self.lock = threading.Lock()

    def fresh(self, name: str) -> Path:
        with self.lock:
            self.n += 1
            path = self.tmp / f"case{self.n:03d}-{name}"
        path.mkdir()
        return path

    def acdc_copy(self, mutate: Callable[[Path], object]) -> Path:
        root = self.fresh("acdc") / "acdc"
        shutil.copytree(self.acdc, root)
        mutate(root)
        return root

    def run_copy(self, mutate: Callable[[Path], object]) -> Path:
        run = self.fresh("run") / self.run.name
        shutil.copytree(self.run, run)
        mutate(run)
        return run

    def npy(self, name: str, array: np.ndarray) -> Path:
        path = self.fresh("npy") / name
        np.save(path, array)
        return path


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "ssl_bench", *map(str, args)]


def _rewrite(path: Path, image=None, label=None, drop: str | None = None) -> None:
    with h5py.File(path, "r") as fh:
        arrays = {k: fh[k][()] for k in fh}
    if image is not None:
        arrays["image"] = image(arrays["image"])
    if label is not None:
        arrays["label"] = label(arrays["label"])
    arrays.pop(drop, None)
    path.unlink()
    _h5(path, **arrays)


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    a.flat[0] = np.nan
    return a


def _truncate(path: Path, keep: int = 300) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def _live_lock(run: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    LIVE.append(sleeper)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    (run / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "purpose": "run"}))


LIVE: list[subprocess.Popen] = []


# -- the cases ------------------------------------------------------------------------------------------------


def cases(fx: Fixtures) -> list[Case]:
    run = ["run", "--method", "unet", *SMOKE]

    def out(t: Path) -> list:
        return ["--out", t / "runs"]

    def acdc(mutate: Callable[[Path], object], *extra: str) -> Callable[[Path], list]:
        return lambda t: [
            *run,
            "--dataset",
            "acdc",
            "--labeled",
            "1",
            "--data-root",
            fx.acdc_copy(mutate),
            *out(t),
            *extra,
        ]

    def test_file(root: Path) -> Path:
        return root / "data" / "patient005_frame02.h5"

    def val_file(root: Path) -> Path:
        return root / "data" / "patient004_frame01.h5"

    def slice_file(root: Path) -> Path:
        return root / "data" / "slices" / "patient002_frame01_slice_1.h5"

    def check(mutate: Callable[[Path], object]) -> Callable[[Path], list]:
        return lambda t: ["data", "check", "acdc", "--data-root", fx.acdc_copy(mutate)]

    def on_run(command: str, mutate: Callable[[Path], object], *extra: str) -> Callable[[Path], list]:
        return lambda t: [command, fx.run_copy(mutate), "--threads", "1", "--no-progress", *extra]

    def plugin(code: str) -> Callable[[Path], list]:
        def args(t: Path) -> list:
            (t / "bad_plugin.py").write_text(code)
            return [*run, "--plugin", t / "bad_plugin.py", *out(t)]

        return args

    def config(text: str) -> Callable[[Path], list]:
        def args(t: Path) -> list:
            (t / "c.yaml").write_text(text)
            return [*run, "--config", t / "c.yaml", *out(t)]

        return args

    def metrics(pred: np.ndarray | None, ref: np.ndarray | None = None, *extra: str) -> Callable[[Path], list]:
        def args(t: Path) -> list:
            p = fx.npy("pred.npy", fx.ref if pred is None else pred)
            r = fx.npy("ref.npy", fx.ref if ref is None else ref)
            return ["metrics", p, r, *extra]

        return args

    bad3 = fx.ref.copy()
    bad3[0, 0, 0] = 5
    fl = fx.ref.astype(np.float32) * 0.5
    nan = _nan(fx.ref)
    set_cases = {
        "trainer.epochs=abc": "trainer.epochs",
        "trainer.epochs=0": "trainer.epochs",
        "trainer.batch_size=0": "batch",
        "optim.lr=-1": "optim.lr",
        "optim.name=rmsprop": "optim.name",
        "optim.schedule=cosine": "optim.schedule",
        "dataset.image_size=33": "image_size",
        "dataset.augment=nope": "dataset.augment",
        "dataset.selection=best": "dataset.selection",
        "model.dropout=1.5": "model.dropout",
        "model.norm=group": "model.norm",
        "model.width=0": "model.width",
        "trainer.select=banana": "trainer.select",
        "eval.metrics_backend=nope": "metrics_backend",
        "eval.blend=max": "eval.blend",
        "params.nope=1": "params.nope",
        "unknown.key=1": "unknown.key",
        "trainer.epochs": "trainer.epochs",
        "trainer.ckpt_every=0": "ckpt_every",
        "eval.stride=0": "eval.stride",
    }
    out_cases = [
        Case("run: unknown --method", lambda t: ["run", "--method", "nope", *SMOKE, *out(t)], "nope"),
        Case("run: unknown --dataset", lambda t: [*run, "--dataset", "nope", *out(t)], "nope"),
        Case("run: unknown --backbone", lambda t: [*run, "--backbone", "nope", *out(t)], "nope"),
        Case("run: 3D backbone on 2D data", lambda t: [*run, "--backbone", "vnet", *out(t)], "vnet"),
        Case("run: --estimator on a method without one", lambda t: [*run, "--estimator", "crm", *out(t)], "estimator"),
        Case(
            "run: unknown --estimator",
            lambda t: ["run", "--method", "coranet", *SMOKE, "--estimator", "nope", *out(t)],
            "nope",
        ),
        Case("run: unknown --preset", lambda t: ["run", "--method", "unet", "--preset", "nope", *out(t)], "nope"),
        Case("run: --labeled 0", lambda t: [*run, "--labeled", "0", *out(t)], "labeled"),
        Case("run: --labeled -1", lambda t: [*run, "--labeled", "-1", *out(t)], "labeled"),
        Case("run: --labeled 1.5", lambda t: [*run, "--labeled", "1.5", *out(t)], "1.5"),
        Case("run: --labeled 1000", lambda t: [*run, "--labeled", "1000", *out(t)], "1000"),
        Case("run: --labeled abc", lambda t: [*run, "--labeled", "abc", *out(t)], "abc"),
        Case("run: --seed abc", lambda t: [*run, "--seed", "abc", *out(t)], "abc"),
        *[Case(f"run: --set {kv}", lambda t, kv=kv: [*run, "--set", kv, *out(t)], n) for kv, n in set_cases.items()],
        Case("run: --config missing", lambda t: [*run, "--config", t / "missing.yaml", *out(t)], "missing.yaml"),
        Case("run: --config bad YAML", config("trainer: [epochs\n"), "c.yaml"),
        Case("run: --config a list", config("- 1\n- 2\n"), "c.yaml"),
        Case("run: --config unknown key", config("trainer:\n  epoks: 3\n"), "epoks"),
        Case("run: --config bad value", config("trainer:\n  epochs: many\n"), "epochs"),
        Case("run: --plugin missing", lambda t: [*run, "--plugin", t / "none.py", *out(t)], "none.py"),
        Case("run: --plugin syntax error", plugin("def broken(:\n"), "bad_plugin.py"),
        Case("run: --plugin raises on import", plugin("raise RuntimeError('boom')\n"), "bad_plugin.py"),
        Case(
            "run: --plugin re-registers a name",
            plugin("from ssl_bench import METHODS, Method\n@METHODS.register('unet')\nclass M(Method):\n    pass\n"),
            "unet",
        ),
        Case("run: acdc without a data root", lambda t: [*run, "--dataset", "acdc", *out(t)], "data-root"),
        Case(
            "run: --data-root missing",
            lambda t: [*run, "--dataset", "acdc", "--data-root", t / "nope", *out(t)],
            "nope",
        ),
        Case(
            "run: --data-root empty folder", lambda t: [*run, "--dataset", "acdc", "--data-root", t, *out(t)], "layout"
        ),
        Case(
            "run: --data-root a file",
            lambda t: [*run, "--dataset", "acdc", "--data-root", fx.tmp / "ref.npy", *out(t)],
            "ref.npy",
        ),
        Case("run: --device banana", lambda t: [*run, "--device", "banana", *out(t)], "banana"),
        Case("run: --device cuda:7", lambda t: [*run, "--device", "cuda:7", *out(t)], "cuda"),
        Case("run: --device mps", lambda t: [*run, "--device", "mps", *out(t)], "mps"),
        Case("run: --threads -2", lambda t: [*run, "--threads", "-2", *out(t)], "--threads"),
        Case("run: --threads 0", lambda t: [*run, "--threads", "0", *out(t)], "--threads"),
        Case("run: --threads abc", lambda t: [*run, "--threads", "abc", *out(t)], "abc"),
        Case("run: --out /dev/null", lambda t: [*run, "--out", "/dev/null"], "/dev/null"),
        Case("run: --out a file", lambda t: [*run, "--out", fx.tmp / "ref.npy"], "ref.npy"),
        Case("run: --out /proc/...", lambda t: [*run, "--out", "/proc/ssl-bench"], "/proc/ssl-bench"),
        Case("run: --out under a file", lambda t: [*run, "--out", fx.tmp / "ref.npy" / "runs"], "ref.npy"),
        Case("run: --metrics-backend nope", lambda t: [*run, "--metrics-backend", "nope", *out(t)], "nope"),
        # data a run touches (tiny ACDC, SSL4MIS layout)
        Case("acdc: truncated test volume", acdc(lambda r: _truncate(test_file(r))), "patient005_frame02"),
        Case("acdc: test volume without label", acdc(lambda r: _rewrite(test_file(r), drop="label")), "label"),
        Case("acdc: test volume without image", acdc(lambda r: _rewrite(test_file(r), drop="image")), "image"),
        Case("acdc: test label 7", acdc(lambda r: _rewrite(test_file(r), label=lambda a: a * 0 + 7)), "7"),
        Case("acdc: test float labels", acdc(lambda r: _rewrite(test_file(r), label=lambda a: a * 0.5)), "patient005"),
        Case("acdc: test NaN image", acdc(lambda r: _rewrite(test_file(r), image=_nan)), "NaN"),
        Case("acdc: test inf image", acdc(lambda r: _rewrite(test_file(r), image=lambda a: a / 0)), "patient005"),
        Case(
            "acdc: test shape mismatch", acdc(lambda r: _rewrite(test_file(r), label=lambda a: a[:, :-1])), "patient005"
        ),
        Case(
            "acdc: test 2D volume",
            acdc(lambda r: _rewrite(test_file(r), image=lambda a: a[0], label=lambda a: a[0])),
            "patient005",
        ),
        Case("acdc: test volume missing", acdc(lambda r: test_file(r).unlink()), "patient005_frame02"),
        Case("acdc: truncated val volume", acdc(lambda r: _truncate(val_file(r))), "patient004_frame01"),
        Case("acdc: val NaN image", acdc(lambda r: _rewrite(val_file(r), image=_nan)), "NaN"),
        Case("acdc: val label 9", acdc(lambda r: _rewrite(val_file(r), label=lambda a: a * 3)), "patient004"),
        Case("acdc: truncated training slice", acdc(lambda r: _truncate(slice_file(r))), "patient002_frame01_slice_1"),
        Case("acdc: training slice NaN", acdc(lambda r: _rewrite(slice_file(r), image=_nan)), "NaN"),
        Case("acdc: training slice label 9", acdc(lambda r: _rewrite(slice_file(r), label=lambda a: a * 3)), "slice_1"),
        Case("acdc: training slice without image", acdc(lambda r: _rewrite(slice_file(r), drop="image")), "image"),
        Case(
            "acdc: training slice 3D",
            acdc(lambda r: _rewrite(slice_file(r), image=lambda a: a[None], label=lambda a: a[None])),
            "slice_1",
        ),
        Case("acdc: training slice missing", acdc(lambda r: slice_file(r).unlink()), "slice_1"),
        Case(
            "acdc: train.list names a missing patient",
            acdc(lambda r: _edit(r / "train.list", "patient001_frame01", "patient009_frame01\npatient001_frame01")),
            "patient009",
        ),
        Case(
            "acdc: val.list names a missing patient",
            acdc(lambda r: (r / "val.list").write_text("patient008_frame01\n")),
            "patient008",
        ),
        Case(
            "acdc: test.list names a missing patient",
            acdc(lambda r: (r / "test.list").write_text("patient007_frame01\n")),
            "patient007",
        ),
        Case("acdc: empty train.list", acdc(lambda r: (r / "train.list").write_text("")), "train.list"),
        Case("acdc: missing test.list", acdc(lambda r: (r / "test.list").unlink()), "test.list"),
        Case(
            "acdc: missing train_slices.list", acdc(lambda r: (r / "train_slices.list").unlink()), "train_slices.list"
        ),
        Case("acdc: missing data/slices/", acdc(lambda r: shutil.rmtree(r / "data" / "slices")), "data/slices"),
        Case(
            "acdc: patient in train and test lists",
            acdc(lambda r: _edit(r / "test.list", "patient005_frame01", "patient001_frame01")),
            "patient001",
        ),
        Case("acdc: --labeled above the training patients", acdc(lambda r: None, "--labeled", "10"), "10"),
        # data check reports
        Case("data check: NaN slice", check(lambda r: _rewrite(slice_file(r), image=_nan)), "NaN", report=True),
        Case("data check: NaN test volume", check(lambda r: _rewrite(test_file(r), image=_nan)), "NaN", report=True),
        Case(
            "data check: truncated test volume",
            check(lambda r: _truncate(test_file(r))),
            "patient005_frame02",
            report=True,
        ),
        Case(
            "data check: label 7", check(lambda r: _rewrite(val_file(r), label=lambda a: a * 0 + 7)), "7", report=True
        ),
        Case(
            "data check: missing patient",
            check(lambda r: (r / "val.list").write_text("patient008_frame01\n")),
            "patient008",
            report=True,
        ),
        Case("data check: unknown dataset", lambda t: ["data", "check", "nope"], "nope"),
        Case("data info: unknown dataset", lambda t: ["data", "info", "nope"], "nope"),
        Case("data check: missing root", lambda t: ["data", "check", "acdc", "--data-root", t / "nope"], "nope"),
        Case(
            "data prepare: missing source",
            lambda t: ["data", "prepare", "acdc", "--source", t / "nope", "--data-root", t / "p"],
            "nope",
        ),
        Case(
            "data prepare: source = destination",
            lambda t: ["data", "prepare", "acdc", "--source", fx.acdc, "--data-root", fx.acdc],
            "same",
        ),
        # resume / eval of damaged run folders
        Case("resume: missing folder", lambda t: ["resume", t / "nope"], "nope"),
        Case("resume: a file", lambda t: ["resume", fx.tmp / "ref.npy"], "ref.npy"),
        Case("resume: not a run folder", lambda t: ["resume", t], "not a run folder"),
        Case(
            "resume: empty manifest", on_run("resume", lambda r: (r / "manifest.json").write_text("")), "manifest.json"
        ),
        Case(
            "resume: truncated manifest",
            on_run("resume", lambda r: _truncate(r / "manifest.json", 40)),
            "manifest.json",
        ),
        Case(
            "resume: manifest a list",
            on_run("resume", lambda r: (r / "manifest.json").write_text("[1]")),
            "manifest.json",
        ),
        Case("eval: empty manifest", on_run("eval", lambda r: (r / "manifest.json").write_text("")), "manifest.json"),
        Case("eval: truncated manifest", on_run("eval", lambda r: _truncate(r / "manifest.json", 40)), "manifest.json"),
        Case(
            "resume: config.yaml bad YAML",
            on_run("resume", lambda r: (r / "config.yaml").write_text("a: [b\n")),
            "config.yaml",
        ),
        Case(
            "eval: config.yaml bad value",
            on_run("eval", lambda r: _edit(r / "config.yaml", "epochs: 2", "epochs: two")),
            "config.yaml",
        ),
        Case(
            "eval: config.yaml bad choice",
            on_run("eval", lambda r: _edit(r / "config.yaml", "select: best-val", "select: banana")),
            "config.yaml",
        ),
        Case(
            "eval: config.yaml unknown method",
            on_run("eval", lambda r: _edit(r / "config.yaml", "method: unet", "method: nope")),
            "nope",
        ),
        Case(
            "eval: config.yaml unknown key",
            on_run("eval", lambda r: _edit(r / "config.yaml", "epochs: 2", "epochs: 2\n  epoks: 3")),
            "epoks",
        ),
        Case("eval: no checkpoints", on_run("eval", lambda r: shutil.rmtree(r / "checkpoints")), "checkpoint"),
        Case(
            "eval: corrupt best.pt", on_run("eval", lambda r: _truncate(r / "checkpoints" / "best.pt", 100)), "best.pt"
        ),
        Case(
            "resume: corrupt last.pt",
            on_run(
                "resume",
                lambda r: (
                    _edit(r / "manifest.json", '"finished"', '"interrupted"'),
                    _truncate(r / "checkpoints" / "last.pt", 100),
                ),
            ),
            "last.pt",
        ),
        Case("resume: run still training (live lock)", on_run("resume", _live_lock), "in use by PID"),
        Case("eval: run still training (live lock)", on_run("eval", _live_lock), "in use by PID"),
        Case(
            "resume: plugin copy missing",
            on_run("resume", lambda r: _edit(r / "manifest.json", '"plugins": {}', '"plugins": {"x.py": "00"}')),
            "x.py",
        ),
        Case("eval: --split nope", on_run("eval", lambda r: None, "--split", "nope"), "nope"),
        Case("eval: --device banana", on_run("eval", lambda r: None, "--device", "banana"), "banana"),
        # metrics
        Case("metrics: missing prediction", lambda t: ["metrics", t / "none.npy", fx.tmp / "ref.npy"], "none.npy"),
        Case("metrics: missing reference", lambda t: ["metrics", fx.tmp / "pred.npy", t / "none.npy"], "none.npy"),
        Case("metrics: shape mismatch", metrics(fx.ref[:, :-1]), "shape"),
        Case("metrics: NaN in prediction", metrics(nan), "NaN"),
        Case("metrics: NaN in reference", metrics(None, nan), "NaN"),
        Case("metrics: non-integer labels", metrics(fl), "pred.npy"),
        Case("metrics: label outside --classes", metrics(bad3, None, "--classes", "1"), "5"),
        Case("metrics: unknown extension", lambda t: ["metrics", fx.tmp / "pred.npy", Path(__file__)], "extension"),
        Case("metrics: file vs folder", lambda t: ["metrics", fx.tmp / "pred.npy", t], "folder"),
        Case("metrics: folder without its predictions", lambda t: ["metrics", fx.fresh("empty"), fx.tmp], "ref.npy"),
        Case("metrics: empty reference folder", lambda t: ["metrics", fx.tmp, fx.fresh("empty")], "no label files"),
        Case("metrics: --spacing negative", metrics(None, None, "--spacing", "-1", "1", "1"), "spacing"),
        Case("metrics: --spacing wrong count", metrics(None, None, "--spacing", "1", "1"), "spacing"),
        Case("metrics: corrupt .npy", lambda t: ["metrics", _bytes(t / "bad.npy"), fx.tmp / "ref.npy"], "bad.npy"),
        Case("metrics: .h5 without label", lambda t: ["metrics", _h5path(t / "x.h5"), _h5path(t / "y.h5")], "label"),
        Case("metrics: all empty", metrics(fx.ref * 0, fx.ref * 0), "--classes"),
        Case("metrics: --backend nope", metrics(None, None, "--backend", "nope"), "nope"),
        # tables, leaderboard, figures
        Case("table: unknown id", lambda t: ["table", "XXI", "--no-write"], "XXI"),
        Case("table: unknown --preset", lambda t: ["table", "IX", "--preset", "smok", "--no-write"], "smok"),
        Case("table: missing --results", lambda t: ["table", "IX", "--results", t / "nope", "--no-write"], "nope"),
        Case("table: spec file missing", lambda t: ["table", t / "none.yaml", "--no-write"], "none.yaml"),
        Case("table: spec file bad YAML", lambda t: ["table", _text(t / "s.yaml", "id: [x\n"), "--no-write"], "s.yaml"),
        Case("table: bad --set key", lambda t: ["table", "IX", "--set", "nope.key=1", "--no-write"], "nope.key"),
        Case("table: --dataset to unknown", lambda t: ["table", "IX", "--dataset", "acdc=nope", "--no-write"], "nope"),
        Case(
            "leaderboard: unknown --metric",
            lambda t: ["leaderboard", "--metric", "dicee", "--results", fx.tmp / "runs"],
            "dicee",
        ),
        Case(
            "leaderboard: unknown --preset",
            lambda t: ["leaderboard", "--preset", "smok", "--results", fx.tmp / "runs"],
            "smok",
        ),
        Case(
            "leaderboard: unknown --dataset",
            lambda t: ["leaderboard", "--dataset", "acdcc", "--results", fx.tmp / "runs"],
            "acdcc",
        ),
        Case("leaderboard: missing --results", lambda t: ["leaderboard", "--results", t / "nope"], "nope"),
        Case("figure: not a run folder", lambda t: ["figure", "curves", fx.tmp / "acdc"], "acdc"),
        Case("figure: missing run folder", lambda t: ["figure", "curves", t / "nope"], "nope"),
        Case("check: unknown method", lambda t: ["check", "--method", "nope"], "nope"),
        Case("check: unknown estimator", lambda t: ["check", "--method", "coranet", "--estimator", "nope"], "nope"),
        Case("list: unknown kind", lambda t: ["list", "nope"], "nope"),
    ]
    return out_cases


def _bytes(path: Path) -> Path:
    path.write_bytes(b"\x93NUMPY garbage")
    return path


def _h5path(path: Path) -> Path:
    _h5(path, image=np.zeros((2, 4, 4), np.float32))
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- running and classifying ----------------------------------------------------------------------------------


def classify(case: Case, code: int | None, stdout: str, stderr: str) -> str:
    text = stdout + stderr
    if code is None:
        return "silent"  # still working at the timeout: it accepted the input
    if "Traceback (most recent call last)" in text:
        return "traceback"
    if code == 0:
        return "silent"
    needle = case.needle.lower()
    if case.report:
        return "clear" if needle in text.lower() else "vague"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if code != 2 or not lines:
        return "vague"
    last = lines[-1]
    argparse_style = len(lines) >= 2 and lines[0].startswith("usage:") and ": error:" in last
    one_line = len(lines) == 1 and last.startswith("error: ")
    return "clear" if (one_line or argparse_style) and needle in last.lower() else "vague"


def run_case(fx: Fixtures, case: Case, timeout: float) -> tuple[Case, str, str, float]:
    tmp = fx.fresh("t")
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSL_BENCH_RESULTS": str(tmp / "default-results")}
    env.pop("SSL_BENCH_ACDC", None)
    try:
        args = case.args(tmp)
        done = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = None, str(exc.stdout or ""), str(exc.stderr or "")
    verdict = classify(case, code, out, err)
    message = (err.strip().splitlines() or out.strip().splitlines() or [""])[-1]
    return case, verdict, f"exit {code}: {message[:240]}", time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--json", type=Path, default=None, help="write every case's verdict and message here")
    ap.add_argument("--all", action="store_true", help="print clear cases too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ssl-bench-sweep-") as tmp:
        os.environ.setdefault("SSL_BENCH_CACHE", str(Path(tmp) / "cache"))
        fx = Fixtures(Path(tmp))
        todo = [c for c in cases(fx) if args.only is None or args.only in c.name]
        try:
            with ThreadPoolExecutor(args.jobs) as pool:
                results = list(pool.map(lambda c: run_case(fx, c, args.timeout), todo))
        finally:
            for proc in LIVE:
                proc.kill()
    counts = Counter(verdict for _, verdict, _, _ in results)
    for case, verdict, message, seconds in results:
        if verdict != "clear" or args.all:
            print(f"[{verdict:9}] {case.name}: {message} ({seconds:.1f} s)")
    print(
        f"{len(results)} kinds of bad input: {counts['clear']} clear, {counts['vague']} vague, "
        f"{counts['traceback']} traceback, {counts['silent']} silent"
    )
    if args.json:
        rows = [{"case": str(c.name), "verdict": v, "message": m} for c, v, m, _ in results]
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if counts["traceback"] == counts["silent"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
