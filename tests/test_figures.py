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
    # runs of one setting are told apart by their values of the keys they differ in (no registry needed)
    assert run_labels(_records([recs[0].path, longer])) == ["unet epochs=2", "unet epochs=7"]
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


# -- figures for a paper (issue #19 item 4) ---------------------------------------------------------------------------


def _with_nan(src: Path, dest: Path) -> Path:
    """A copy of a run with a log of its own: 6 training steps (the third loss NaN), validation at steps 2, 4, 6
    (the second Dice NaN)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("checkpoints"))
    losses = [1.0, 0.8, float("nan"), 0.5, 0.4, 0.3]
    recs = [{"type": "train", "step": i + 1, "epoch": 0, "loss": v} for i, v in enumerate(losses)]
    recs += [
        {"type": "val", "step": s, "epoch": 0, "val_dice_fg": d} for s, d in ((2, 0.3), (4, float("nan")), (6, 0.5))
    ]
    (dest / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return dest


def _line_colours(fig) -> set[str]:
    from matplotlib.colors import to_hex

    return {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}


def test_curves_for_a_paper(smoke_tree, tmp_path):  # noqa: F811
    from ssl_bench.reporting.figure_style import NAN_MARKER, OKABE_ITO, PAGE_WIDTH
    from ssl_bench.reporting.figures import fig_curves, save_figure

    unet = _run_dirs(smoke_tree, "unet")[0]
    nan_run = _with_nan(unet, tmp_path / "nan" / "20990101-000000-nan")
    fig = fig_curves([unet, _run_dirs(smoke_tree, "mean-teacher")[0], nan_run])
    ax_val, ax_loss, ax_unsup = fig.axes
    # validation Dice on its own axis (0-1), the loss on another, the unsupervised terms (normalised) on a third
    assert ax_val.get_title() == "validation Dice" and ax_val.get_ylim() == (0.0, 1.0)
    assert ax_loss.get_ylabel() == "training loss" and ax_unsup.get_ylabel() == "term / its maximum"
    assert max(y for line in ax_unsup.get_lines() for y in line.get_ydata()) == pytest.approx(1.0)
    # one legend for the figure, none on the panels; colours from the colour-blind-safe palette
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert _line_colours(fig) <= {c.lower() for c in OKABE_ITO} | {"#4d4d4d"}
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "NaN (no value)" in labels and "consistency" in labels
    # the NaN points are marked (at the bottom edge of their axis), not dropped silently
    for ax in (ax_val, ax_loss):
        marks = [line for line in ax.get_lines() if line.get_marker() == NAN_MARKER["marker"]]
        assert len(marks) == 1 and len(marks[0].get_xdata()) == 1
    assert fig.get_figwidth() == pytest.approx(PAGE_WIDTH)
    png, pdf = save_figure(fig, tmp_path / "curves")
    assert b"/FontFile2" in pdf.read_bytes()  # vector PDF with TrueType text, not a picture of it
    assert png.read_bytes()[:8] == PNG


def test_pl_figures_have_one_legend_and_human_labels(smoke_tree, tmp_path):  # noqa: F811
    from ssl_bench.reporting.figures import fig_pl_course, fig_pl_quality

    crm = _run_dirs(smoke_tree, "coranet")[0]
    soft = _with_estimator(crm, tmp_path / "soft" / "20990101-000000-soft", "softmax-threshold", 0.7, 0.5)
    for make in (fig_pl_quality, fig_pl_course):
        fig = make([crm, soft], region="all")
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes), make.__name__
        legend = fig.legends[0]
        texts = [t.get_text() for t in legend.get_texts()]
        assert {"crm", "softmax-threshold 0.7"} <= set(texts)
        assert "cls" not in legend.get_title().get_text() and "estimator" in legend.get_title().get_text()
    course = fig_pl_course([crm, soft], region="all")
    assert {"RV", "Myo", "LV"} <= {t.get_text() for t in course.legends[0].get_texts()}  # class names, not ids
