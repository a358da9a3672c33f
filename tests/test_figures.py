"""Figures (ssl_bench.reporting.figures) from real smoke runs: PNG + PDF written, data behind the plots checked."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from test_results import _run_dirs, smoke_tree  # noqa: F401 - session fixture shared with test_results

PNG = b"\x89PNG\r\n\x1a\n"


def _check(paths: list[Path], stem: Path) -> None:
    assert [p.name for p in paths] == [stem.name + ".png", stem.name + ".pdf"]
    assert paths[0].read_bytes()[:8] == PNG and paths[0].stat().st_size > 5000
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_curves(cli, capsys, smoke_tree, tmp_path):  # noqa: F811
    runs = _run_dirs(smoke_tree, "unet") + _run_dirs(smoke_tree, "coranet")
    assert cli("figure", "curves", *runs, "--out", tmp_path / "curves.png") == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "curves.png"), str(tmp_path / "curves.pdf")]
    _check([Path(p) for p in printed], tmp_path / "curves")


def test_run_labels_show_what_differs(smoke_tree, tmp_path):  # noqa: F811
    from ssl_bench.reporting.figures import _records, run_labels

    recs = _records(_run_dirs(smoke_tree, "unet") + _run_dirs(smoke_tree, "mean-teacher"))
    assert run_labels(recs) == ["unet seed 0", "unet seed 1", "mean-teacher seed 0"]
    assert run_labels(recs[:1]) == ["unet"]
    # a run with another setting (here a longer schedule) is named by the key that differs from the preset
    longer = tmp_path / "longer"
    shutil.copytree(_run_dirs(smoke_tree, "unet")[0], longer, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = yaml.safe_load((longer / "config.yaml").read_text())
    cfg["trainer"]["epochs"] = 7
    (longer / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert run_labels(_records([recs[0].path, longer])) == ["unet", "unet epochs=7"]
    assert run_labels(_records([recs[0].path, recs[2].path, longer])) == ["unet", "mean-teacher", "unet epochs=7"]


def _with_estimator(src: Path, dest: Path, estimator: str, threshold: float | None, scale: float) -> Path:
    """A copy of a CoraNet run whose config names another estimator and whose pseudo-label logs are scaled."""
    import yaml

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["params"]["estimator"] = estimator
    if threshold is not None:
        cfg["params"]["estimator_options"] = {"threshold": threshold}
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for line in (dest / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "epoch":
            rec = {k: (v * scale if k.startswith("pl/") and isinstance(v, float) else v) for k, v in rec.items()}
        lines.append(json.dumps(rec))
    (dest / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return dest


def test_fig3_fig4_pseudo_label_quality(cli, capsys, smoke_tree, tmp_path):  # noqa: F811
    from ssl_bench.reporting.figures import fig_pl_course, fig_pl_quality, pl_quality, save_figure
    from ssl_bench.reporting.results import load_metrics_log

    crm = _run_dirs(smoke_tree, "coranet")[0]
    soft = _with_estimator(crm, tmp_path / "soft" / "20990101-000000-soft", "softmax-threshold", 0.7, 0.5)
    # region "all": after a few smoke steps the freshly initialised con/rad branches still disagree everywhere, so
    # the certain region is empty and its scores are NaN
    data = pl_quality([crm, soft], region="all")
    assert set(data["estimator"]) == {"crm", "softmax-threshold 0.7"}
    first = load_metrics_log(crm, "epoch").iloc[0]
    initial = data[(data["refresh"] == 0) & (data["estimator"] == "crm")]
    assert len(initial) == 3 * 3  # PPV, TPR, CSI x 3 classes
    for _, row in initial.iterrows():
        want = first[f"pl/all/{row['metric'].lower()}_{row['class']}"]
        assert (math.isnan(want) and math.isnan(row["value"])) or row["value"] == pytest.approx(want)
    halves = data[(data["estimator"] == "softmax-threshold 0.7")]["value"].to_numpy()
    full = data[(data["estimator"] == "crm")]["value"].to_numpy()
    assert halves == pytest.approx(full * 0.5, nan_ok=True)
    assert data["refresh"].nunique() == len(load_metrics_log(crm, "epoch"))
    _check(save_figure(fig_pl_quality([crm, soft], region="all"), tmp_path / "fig3"), tmp_path / "fig3")
    _check(save_figure(fig_pl_course([crm, soft], region="all"), tmp_path / "fig4.pdf"), tmp_path / "fig4")
    assert cli("figure", "fig4", crm, soft, "--region", "all", "--out", tmp_path / "cli4") == 0
    assert (tmp_path / "cli4.png").exists()
    # runs that log no pseudo-label quality: a one-line error
    assert cli("figure", "fig3", _run_dirs(smoke_tree, "unet")[0], "--out", tmp_path / "x") == 2
    assert "no pseudo-label quality records" in capsys.readouterr().err


def test_masks_and_overlays(cli, capsys, smoke_tree, tmp_path):  # noqa: F811
    from ssl_bench.reporting.figures import make_figure

    crm = _run_dirs(smoke_tree, "coranet")[0]
    paths = make_figure("masks", [crm], tmp_path / "masks", cases=["phantom025"])
    _check(paths, tmp_path / "masks")
    runs = _run_dirs(smoke_tree, "unet")[:1] + _run_dirs(smoke_tree, "mean-teacher") + [crm]
    _check(make_figure("overlays", runs, tmp_path / "ov"), tmp_path / "ov")
    # a method without an estimator, a record without checkpoints, an unknown case: one-line errors
    assert cli("figure", "masks", runs[0], "--out", tmp_path / "m2") == 2
    assert "has no uncertainty estimator" in capsys.readouterr().err
    record = tmp_path / "rec" / runs[0].name
    shutil.copytree(runs[0], record, ignore=shutil.ignore_patterns("checkpoints"))
    assert cli("figure", "overlays", record, "--out", tmp_path / "o2") == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli("figure", "overlays", runs[0], "--case", "nope", "--out", tmp_path / "o3") == 2
    assert "not in the test split" in capsys.readouterr().err


def test_overlays_binary_contours(tmp_path):
    """Binary data (Fig. 6/7): every run's contour on one panel per case."""
    from ssl_bench.reporting.figures import make_figure
    from ssl_bench.training.runner import resolve_config, start_run

    fast = {"trainer.epochs": 1, "trainer.iters_per_epoch": 1, "trainer.val_every": 0}
    cfg = resolve_config("unet", "pancreas-phantom", preset="smoke", seed=0, overrides=fast)
    run = start_run(cfg, out=tmp_path / "runs", progress=False, echo=lambda s: None).run_dir
    _check(make_figure("overlays", [run], tmp_path / "bin"), tmp_path / "bin")
