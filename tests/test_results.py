"""Results loading (ssl_bench.reporting.results): a small tree of real smoke runs, loaded as tidy DataFrames.

The session fixture ``smoke_tree`` (also imported by test_tables, test_figures and test_notebooks) trains three tiny
runs once per session on the built-in cardiac phantom: unet seeds 0 and 1, mean-teacher seed 0 — and a CoraNet run
(seed 0) for the figures that need an uncertainty estimator and pseudo-label logs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

#: the tiniest real runs: smoke preset, 2 epochs of 1 step (CoraNet: its smoke preset's 1 pre-training epoch, then 1
#: of self-training), no validation. One setting for all, so that a table built with ``overrides=FAST`` has them all.
FAST = {"trainer.epochs": 2, "trainer.iters_per_epoch": 1, "trainer.val_every": 0}
RUNS = [
    ("unet", 0, {}),
    ("unet", 1, {}),
    ("mean-teacher", 0, {}),
    ("coranet", 0, {}),
]


def build_smoke_tree(root: Path) -> Path:
    """Train :data:`RUNS` into ``root`` (once: a marker file makes later calls, from any module, reuse it)."""
    marker = root / ".complete"
    if marker.exists():
        return root
    from ssl_bench.training.runner import resolve_config, start_run

    if root.exists():
        shutil.rmtree(root)
    for method, seed, extra in RUNS:
        cfg = resolve_config(method, "cardiac-phantom", preset="smoke", seed=seed, overrides={**FAST, **extra})
        start_run(cfg, out=root, progress=False, echo=lambda s: None)
    marker.write_text("ok\n")
    return root


@pytest.fixture(scope="session")
def smoke_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = os.environ.get("SSL_BENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_BENCH_CACHE", cache)
        return build_smoke_tree(tmp_path_factory.getbasetemp() / "smoke_tree")


def _run_dirs(tree: Path, method: str) -> list[Path]:
    return sorted(p.parent for p in tree.glob(f"cardiac-phantom/{method}/*/seed*/*/manifest.json"))


def test_find_runs_reads_config_and_manifest(smoke_tree):
    from ssl_bench.reporting.results import find_runs

    runs = find_runs(smoke_tree)
    assert len(runs) == len(RUNS)
    assert all(r.finished for r in runs)
    unet = [r for r in runs if r.get("method") == "unet"]
    assert sorted(r.get("seed") for r in unet) == [0, 1]
    fields = unet[0].fields
    assert fields["dataset"] == "cardiac-phantom" and fields["preset"] == "smoke" and fields["backbone"] == "unet2d"
    assert fields["config_hash"] == json.loads((unet[0].path / "manifest.json").read_text())["config_hash"]
    # the seed-free setting hash groups seeds of one setting
    assert unet[0].setting == unet[1].setting
    assert unet[0].manifest["config_hash"] != unet[1].manifest["config_hash"]


def test_load_runs_case_level_is_per_case_csv(smoke_tree):
    from ssl_bench.reporting.results import load_runs

    df = load_runs(smoke_tree, method="unet", seed=0)
    run_dir = _run_dirs(smoke_tree, "unet")[0]
    pc = pd.read_csv(run_dir / "eval" / "test" / "per_case.csv", dtype={"case": str})
    n_metrics = len([c for c in pc.columns if c not in ("case", "class", "tp", "fp", "fn", "n_ref", "n_pred", "empty")])
    assert len(df) == len(pc) * n_metrics  # run x case x class x metric
    assert set(df["class_name"]) == {"RV", "Myo", "LV"}
    dice = df[(df["metric"] == "dice")].set_index(["case", "class"])["value"].sort_index()
    expected = pc.set_index(["case", "class"])["dice"].sort_index()
    np.testing.assert_allclose(dice.to_numpy(), expected.to_numpy())
    assert {"run_id", "method", "seed", "config_hash", "setting", "git_sha"} <= set(df.columns)


def test_load_runs_run_level_equals_summary_json(smoke_tree):
    from ssl_bench.reporting.results import load_runs

    df = load_runs(smoke_tree, level="run", method=["unet", "mean-teacher"])
    assert df["run_id"].nunique() == 3
    for run_dir in _run_dirs(smoke_tree, "unet") + _run_dirs(smoke_tree, "mean-teacher"):
        summary = json.loads((run_dir / "eval" / "test" / "summary.json").read_text())
        mine = df[df["run_id"] == run_dir.name]
        for k, cls in summary["classes"].items():
            for metric in ("dice", "hd95_vox"):
                row = mine[(mine["class"] == int(k)) & (mine["metric"] == metric)].iloc[0]
                want = cls[metric]
                assert (math.isnan(want["mean"]) and math.isnan(row["mean"])) or row["mean"] == pytest.approx(
                    want["mean"]
                )
                assert row["n"] == want["n"] and row["n_nan"] == want["n_nan"]
        fg = mine[(mine["class_name"] == "mean") & (mine["metric"] == "dice")]["mean"].iloc[0]
        assert fg == pytest.approx(summary["foreground_mean"]["dice"])


def test_load_run_summaries_has_cost_and_status(smoke_tree, tmp_path):
    from ssl_bench.reporting.results import load_run_summaries

    df = load_run_summaries(smoke_tree)
    assert len(df) == len(RUNS)
    assert set(df["status"]) == {"finished"}
    assert (df["train_s"] > 0).all() and (df["params_train"] > 0).all()
    coranet = df[df["method"] == "coranet"].iloc[0]
    assert coranet["params_train"] > coranet["params_inference"]  # CRM heads are dropped at test time
    assert coranet["estimator"] == "crm" and coranet["alpha"] == 5.0
    assert df["dice"].between(0, 1).all()
    # an unfinished run shows up with its status (and no scores)
    broken = tmp_path / "x" / "seed0" / "20200101-000000-deadbeef"
    broken.mkdir(parents=True)
    shutil.copy(_run_dirs(smoke_tree, "unet")[0] / "config.yaml", broken / "config.yaml")
    (broken / "manifest.json").write_text(json.dumps({"status": "interrupted"}))
    both = load_run_summaries([smoke_tree, tmp_path])
    assert both.set_index("run_id").loc[broken.name, "status"] == "interrupted"
    assert len(load_run_summaries([smoke_tree, tmp_path], status="finished")) == len(RUNS)


def test_export_records_are_lightweight_and_read_back(smoke_tree, tmp_path):
    from ssl_bench.reporting.results import export_records, find_runs, load_runs

    records = tmp_path / "records"
    written = export_records(find_runs(smoke_tree), records)
    assert len(written) == len(RUNS)
    files = {p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file()}
    assert not any("checkpoints" in f or f.endswith(".pt") for f in files)
    assert all(f.split("/")[0] == "cardiac-phantom" for f in files)
    one = written[0]
    assert {"config.yaml", "manifest.json", "metrics.jsonl"} <= {p.name for p in one.iterdir()}
    assert (one / "eval" / "test" / "per_case.csv").exists() and (one / "eval" / "test" / "summary.json").exists()
    # same numbers from the records alone; a run in both places is read once
    a = load_runs(smoke_tree, level="run").sort_values(["run_id", "metric", "class_name"]).reset_index(drop=True)
    b = load_runs(records, level="run").sort_values(["run_id", "metric", "class_name"]).reset_index(drop=True)
    pd.testing.assert_series_equal(a["mean"], b["mean"])
    assert load_runs([smoke_tree, records], level="run")["run_id"].nunique() == len(RUNS)
    assert export_records(find_runs(smoke_tree), records) == []  # existing records are kept


def test_load_runs_empty_folder_has_columns(tmp_path):
    from ssl_bench.reporting.results import load_run_summaries, load_runs

    df = load_runs(tmp_path / "nothing")
    assert df.empty and {"run_id", "metric", "value"} <= set(df.columns)
    assert load_runs(tmp_path, level="run").empty
    assert load_run_summaries(tmp_path).empty


def test_load_metrics_log(smoke_tree):
    from ssl_bench.reporting.results import load_metrics_log

    run_dir = _run_dirs(smoke_tree, "coranet")[0]
    train = load_metrics_log(run_dir, "train")
    assert (train["type"] == "train").all() and "loss" in train
    epoch = load_metrics_log(run_dir, "epoch")
    assert any(c.startswith("pl/certain/ppv_") for c in epoch.columns)
