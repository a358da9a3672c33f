"""Figures of the CoraNet paper from run folders (matplotlib; every figure is saved as PNG and vector PDF).

=========  ===============================================================================  ====================
kind       what                                                                             needs
=========  ===============================================================================  ====================
fig3       PPV / TPR / CSI of the initial pseudo-labels (end of pre-training), bars per       ``metrics.jsonl``
           estimator (Fig. 3)                                                                 epoch records
fig4       the same over self-training, one line per estimator (Fig. 4)                       ``metrics.jsonl``
masks      uncertain-region mask and ground truth over test images (Fig. 5/8)                checkpoints
overlays   contours of several runs vs ground truth (Fig. 6/7); per-class fills for          checkpoints
           multi-class data (Fig. 9)
curves     validation Dice, training loss, unsupervised loss terms (normalised)              ``metrics.jsonl``
=========  ===============================================================================  ====================

Every figure has one legend (below the panels), human labels, the colour-blind-safe Okabe-Ito palette, NaN values
marked where they fall (not left as gaps) and the sizes of a two-column paper (see :mod:`.figure_style`).
Pseudo-label quality is what CoraNet logs at every refresh of its pseudo-labels (``pl/<region>/<ppv|tpr|csi>_<k>``,
scored against the unlabelled images' labels, which training never sees). Each function returns a matplotlib
``Figure`` (made without pyplot, so it works headless and in notebooks); :func:`save_figure` writes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_bench.core.errors import RunDirError
from ssl_bench.reporting.figure_style import (
    COLUMN_WIDTH,
    LINE_STYLES,
    OKABE_ITO,
    PAGE_WIDTH,
    VERMILLION,
    YELLOW,
    colour,
    figure_legend,
    line_with_nan_marks,
    nan_handle,
    new_figure,
    paper_rc,
    paper_style,
)
from ssl_bench.reporting.results import RunRecord, _read_run, load_metrics_log

__all__ = [
    "fig_curves",
    "fig_masks",
    "fig_overlays",
    "fig_pl_course",
    "fig_pl_quality",
    "make_figure",
    "pl_quality",
    "run_labels",
    "save_figure",
]

KINDS = ("fig3", "fig4", "masks", "overlays", "curves")
#: contour colours of the runs in Fig. 6/7 (the ground truth is yellow): Okabe-Ito without yellow
RUN_COLOURS = tuple(c for c in OKABE_ITO if c != YELLOW)
#: per-class fills of Fig. 9 (class 1, 2, ...): Okabe-Ito
CLASS_COLOURS = OKABE_ITO
_PL_KEY = re.compile(r"^pl/(?P<region>[a-z]+)/(?P<metric>ppv|tpr|csi)_(?P<cls>\d+)$")


def _records(run_dirs: Iterable[str | Path | RunRecord]) -> list[RunRecord]:
    out = []
    for item in run_dirs:
        if isinstance(item, RunRecord):
            out.append(item)
            continue
        path = Path(item)
        rec = _read_run(path, path.parent) if path.is_dir() else None
        if rec is None:
            raise RunDirError(f"{item} is not a run folder (needs config.yaml and manifest.json)")
        out.append(rec)
    if not out:
        raise RunDirError("no run folders given")
    return out


def _estimator_label(rec: RunRecord) -> str:
    est = rec.get("params.estimator")
    if est is None:
        return str(rec.get("method"))
    threshold = rec.get("params.estimator_options.threshold")
    return f"{est} {threshold:g}" if isinstance(threshold, (int, float)) else str(est)


def run_labels(records: Sequence[RunRecord]) -> list[str]:
    """Short legend labels: the settings that differ between the runs (method, estimator, α, ..., seed), then the
    other config keys that some run sets apart from its preset, where they differ between the runs
    (``iters_per_epoch=160``; see :func:`ssl_bench.reporting.tables.variant_items`). Runs of one setting are
    compared with each other directly, which needs no registry (so no torch): each is labelled with its value of
    every key in which they differ (``epochs=2``, ``epochs=7``)."""
    from ssl_bench.core.config import format_config_value
    from ssl_bench.reporting.tables import UNMATCHED_KEYS, variant_items

    fields = [
        ("method", "method", ""),
        ("params.estimator", "estimator", ""),
        ("params.alpha", "alpha", "α="),
        ("model.backbone", "backbone", ""),
        ("dataset.name", "dataset", ""),
        ("dataset.labeled", "labeled", "lab "),
        ("preset", "preset", ""),
        ("seed", "seed", "seed "),
    ]
    varying = [f for f in fields if len({str(r.get(f[0])) for r in records}) > 1]
    if all(key == "seed" for key, _, _ in varying):  # one setting: its expected config is common to all runs
        variants = [{k: v for k, v in r.config.items() if k not in UNMATCHED_KEYS} for r in records]
    else:  # each run against what its own setting resolves to (imports the registry)
        variants = [variant_items(r) or {} for r in records]
    extra = sorted({k for v in variants for k in v if len({str(w.get(k)) for w in variants}) > 1})
    if not varying:
        varying = fields[:1]
    labels = []
    for r, variant in zip(records, variants):
        parts = [
            (f"{prefix}{r.get(key):g}" if isinstance(r.get(key), float) else f"{prefix}{r.get(key)}")
            for key, _, prefix in varying
            if r.get(key) is not None
        ]
        parts += [f"{k.rsplit('.', 1)[-1]}={format_config_value(variant[k])}" for k in extra if k in variant]
        labels.append(" ".join(parts))
    return labels


# -- pseudo-label quality (Fig. 3, 4) -------------------------------------------------------------------------------


def pl_quality(run_dirs: Iterable[str | Path | RunRecord], region: str = "certain") -> pd.DataFrame:
    """Tidy pseudo-label quality over refreshes: ``run_id, label, estimator, seed, epoch, refresh, class, metric,
    value`` (``refresh`` 0 = the initial prediction at the end of pre-training)."""
    records = _records(run_dirs)
    labels = run_labels(records)
    rows = []
    only_nan = []  # runs that logged pseudo-label quality, every value NaN
    for rec, label in zip(records, labels):
        log = load_metrics_log(rec.path, "epoch")
        cols = [c for c in log.columns if (m := _PL_KEY.match(c)) and m["region"] == region]
        if not cols:
            continue
        if log[cols].notna().sum().sum() == 0:
            only_nan.append(rec.run_id)
        log = log.dropna(subset=cols, how="all").reset_index(drop=True)
        for refresh, entry in log.iterrows():
            for col in cols:
                m = _PL_KEY.match(col)
                assert m is not None
                rows.append(
                    {
                        "run_id": rec.run_id,
                        "label": label,
                        "estimator": _estimator_label(rec),
                        "seed": rec.get("seed"),
                        "epoch": int(entry.get("epoch", refresh)),
                        "refresh": int(refresh),
                        "class": int(m["cls"]),
                        "metric": m["metric"].upper(),
                        "value": float(entry[col]),
                    }
                )
    if not rows and only_nan:
        raise RunDirError(
            f"the pseudo-label quality records (pl/{region}/ppv_k ...) of {', '.join(only_nan)} hold only NaN: at "
            f"every refresh no {region} pixel was predicted or labelled as a foreground class, so PPV/TPR/CSI are "
            "undefined (an untrained network, e.g. the smoke preset, or a threshold no pixel passes); train longer, "
            f"use --region {'all' if region == 'certain' else 'certain'}, or compare estimators on one trained "
            "network with `ssl-bench estimators compare`"
        )
    if not rows:
        raise RunDirError(
            f"no pseudo-label quality records (pl/{region}/ppv_k ...) in the metrics.jsonl of these runs; fig3/fig4 "
            "need runs of a method that logs them at its pseudo-label refreshes (CoraNet and its --estimator variants)"
        )
    return pd.DataFrame(rows)


def _class_names(records: Sequence[RunRecord]) -> dict[int, str]:
    for rec in records:
        names = rec.label_names()
        if names:
            return names
    return {}


METRICS = ("PPV", "TPR", "CSI")


@paper_style
def fig_pl_quality(run_dirs: Iterable[str | Path | RunRecord], region: str = "certain") -> Any:
    """Fig. 3: PPV, TPR and CSI of the initial pseudo-labels, one bar per estimator (mean over seeds, error bar:
    their min-max); one panel per foreground class, one legend. A NaN score is written as "NaN" where its bar
    would be."""
    records = _records(run_dirs)
    data = pl_quality(records, region)
    initial = data[data["refresh"] == 0]
    classes = sorted(initial["class"].unique())
    estimators = list(dict.fromkeys(initial["estimator"]))
    names = _class_names(records)
    fig, axes = new_figure(len(classes), panel_height=2.3)
    width = 0.8 / len(estimators)
    for ax, k in zip(axes[0], classes):
        sub = initial[initial["class"] == k]
        for i, est in enumerate(estimators):
            values = sub[sub["estimator"] == est].groupby("metric")["value"]
            means = values.mean().reindex(METRICS)
            spread = None
            if values.size().max() > 1:  # min-max over seeds (stays within [0, 1], unlike mean ± std)
                low, high = values.min().reindex(METRICS), values.max().reindex(METRICS)
                spread = np.nan_to_num(np.stack([means - low, high - means]))
            x = np.arange(len(METRICS)) - 0.4 + width * (i + 0.5)
            ax.bar(
                x,
                means.fillna(0.0),
                width,
                yerr=spread,
                color=colour(i),
                label=est,
                capsize=2,
                error_kw={"linewidth": 0.8},
            )
            for xi, m in zip(x, means):
                if not np.isfinite(m):
                    ax.text(xi, 0.02, "NaN", rotation=90, ha="center", va="bottom", fontsize=6, color=colour(i))
        ax.set_xticks(range(len(METRICS)), METRICS)
        ax.set_ylim(0, 1)
        ax.set_ylabel("initial pseudo-labels" if k == classes[0] else "")
        ax.set_title(names.get(k, f"class {k}"))
        ax.grid(axis="x", visible=False)
    figure_legend(fig, axes[0][0].get_legend_handles_labels()[0], title=f"estimator ({region} pixels)")
    return fig


@paper_style
def fig_pl_course(run_dirs: Iterable[str | Path | RunRecord], region: str = "certain") -> Any:
    """Fig. 4: PPV, TPR and CSI of the pseudo-labels at every refresh during self-training: a colour per
    estimator, a line style per class (multi-class data), mean over seeds (band: their min-max, single-class data);
    one legend. A NaN point
    is marked at the bottom of its panel."""
    from matplotlib.lines import Line2D

    records = _records(run_dirs)
    data = pl_quality(records, region)
    names = _class_names(records)
    estimators = list(dict.fromkeys(data["estimator"]))
    classes = sorted(data["class"].unique())
    multi = len(classes) > 1
    fig, axes = new_figure(3, panel_height=2.2)
    any_nan = False
    for ax, metric in zip(axes[0], METRICS):
        sub = data[data["metric"] == metric]
        for i, est in enumerate(estimators):
            for j, k in enumerate(classes):
                series = sub[(sub["estimator"] == est) & (sub["class"] == k)].groupby("epoch")["value"]
                mean = series.mean()
                style = {"color": colour(i), "linestyle": LINE_STYLES[j % len(LINE_STYLES)] if multi else "-"}
                any_nan |= line_with_nan_marks(ax, mean.index, mean.to_numpy(), marker="o", **style)
                if not multi and series.size().max() > 1:  # one band per line would hide the lines
                    ax.fill_between(mean.index, series.min(), series.max(), color=colour(i), alpha=0.15, linewidth=0)
        ax.set_title(metric)
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel(f"pseudo-labels ({region} pixels)")
    handles = [Line2D([], [], color=colour(i), marker="o", label=est) for i, est in enumerate(estimators)]
    if multi:
        handles += [
            Line2D([], [], color="0.3", linestyle=LINE_STYLES[j % len(LINE_STYLES)], label=names.get(k, f"class {k}"))
            for j, k in enumerate(classes)
        ]
    if any_nan:
        handles.append(nan_handle())
    figure_legend(fig, handles, title="estimator" + (" and class" if multi else ""), ncols=min(len(handles), 6))
    return fig


# -- training curves ----------------------------------------------------------------------------------------------


@paper_style
def fig_curves(run_dirs: Iterable[str | Path | RunRecord]) -> Any:
    """Training curves, a colour per run, one legend: validation foreground Dice on its own panel (0-1), the total
    training loss on the next, and, where runs log them, the unsupervised loss terms (``unsup/*``, which differ in
    scale: each divided by its largest value) on a third, a line style per term. NaN points are marked."""
    from matplotlib.lines import Line2D

    records = _records(run_dirs)
    labels = run_labels(records)
    logs = [load_metrics_log(rec.path) for rec in records]
    terms = sorted({c for log in logs for c in log.columns if c.startswith("unsup/")})
    fig, axes = new_figure(3 if terms else 2, panel_height=2.3)
    ax_val, ax_loss = axes[0][0], axes[0][1]
    any_nan = False
    for i, log in enumerate(logs):
        if log.empty:
            continue
        train, val = log[log["type"] == "train"], log[log["type"] == "val"]
        if "val_dice_fg" in val:
            any_nan |= line_with_nan_marks(ax_val, val["step"], val["val_dice_fg"], color=colour(i), marker="o")
        if "loss" in train:
            any_nan |= line_with_nan_marks(ax_loss, train["step"], train["loss"], color=colour(i), linewidth=0.9)
        for j, term in enumerate(terms):
            values = pd.to_numeric(train.get(term), errors="coerce")
            if values is None or not np.isfinite(values).any():
                continue
            # a term is logged from its stage on (CoraNet's after pre-training): NaN only between its first and last
            logged = values.index[np.isfinite(values)]
            values = values.loc[logged[0] : logged[-1]].to_numpy(dtype=float)
            steps = train["step"].loc[logged[0] : logged[-1]]
            top = np.nanmax(np.abs(values))
            style = {"color": colour(i), "linestyle": LINE_STYLES[j % len(LINE_STYLES)], "linewidth": 0.9}
            any_nan |= line_with_nan_marks(axes[0][2], steps, values / (top if top > 0 else 1.0), **style)
    ax_val.set(xlabel="step", ylabel="mean foreground Dice", title="validation Dice", ylim=(0, 1))
    ax_loss.set(xlabel="step", ylabel="training loss", title="training loss (total)")
    handles = [Line2D([], [], color=colour(i), label=label) for i, label in enumerate(labels)]
    if terms:
        axes[0][2].set(xlabel="step", ylabel="term / its maximum", title="unsupervised loss terms")
        handles += [
            Line2D([], [], color="0.3", linestyle=LINE_STYLES[j % len(LINE_STYLES)], label=t.split("/", 1)[1])
            for j, t in enumerate(terms)
        ]
    if any_nan:
        handles.append(nan_handle())
    figure_legend(fig, handles, ncols=min(len(handles), 4))
    return fig


# -- model-based figures (masks, overlays) ----------------------------------------------------------------------------


def _load_model(rec: RunRecord, device: str = "cpu", checkpoint: str = "auto") -> tuple[Any, Any, Any]:
    """(config, adapter, method) with the run's selected weights (best-val or last, as its config says)."""
    import torch

    from ssl_bench.training.runner import build_adapter, build_method, load_run

    cfg, _ = load_run(rec.path, training=False)
    best, last = rec.path / "checkpoints" / "best.pt", rec.path / "checkpoints" / "last.pt"
    if checkpoint == "auto":
        path = best if (cfg.trainer.select == "best-val" and best.exists()) else last
    else:
        path = best if checkpoint == "best" else last
    if not path.exists():
        raise RunDirError(
            f"{rec.path} has no checkpoint ({path.name}); masks and overlays need the run folder with its "
            "checkpoints (records under results/records have none)"
        )
    adapter = build_adapter(cfg)
    method = build_method(cfg, adapter).to(device)
    state = torch.load(path, map_location=device, weights_only=False)
    method.load_state_dict(state["model"])
    method.eval()
    return cfg, adapter, method


def _pick_slice(label: np.ndarray) -> int:
    area = (label > 0).reshape(label.shape[0], -1).sum(1)
    return int(area.argmax()) if area.max() > 0 else label.shape[0] // 2


def _case_ids(adapter: Any, cases: Sequence[str] | None, n: int) -> list[str]:
    test = adapter.splits().get("test") or []
    if cases:
        unknown = [c for c in cases if c not in test]
        if unknown:
            raise RunDirError(f"case(s) {unknown} not in the test split (e.g. {', '.join(test[:5])})")
        return list(cases)
    return list(test[:n])


def _show_image(ax: Any, image: np.ndarray) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _panel_width(ncols: int) -> float:
    """Width of a figure of ``ncols`` image panels: one column of the paper for up to two, the page for up to four,
    wider beyond (1.8 in per panel)."""
    return COLUMN_WIDTH if ncols <= 2 else PAGE_WIDTH if ncols <= 4 else 1.8 * ncols


@paper_style
def fig_masks(
    run_dirs: Iterable[str | Path | RunRecord],
    cases: Sequence[str] | None = None,
    n_cases: int = 2,
    device: str = "cpu",
) -> Any:
    """Fig. 5/8: the uncertain region (vermillion) of each run's estimator over test slices, ground truth
    contoured in yellow; one legend.

    One column per run (e.g. CoraNet with alpha 2, 5, 10, or runs stopped at different epochs), one row per case;
    each case is shown at the slice with the largest foreground, resized to the run's training size (2D runs; for
    3D runs the central patch around that slice).
    """
    import torch
    from matplotlib.colors import to_rgb

    from ssl_bench.core.transforms import resize_images, resize_labels

    records = _records(run_dirs)
    labels = run_labels(records)
    models = [_load_model(rec, device) for rec in records]
    for rec, (_, _, method) in zip(records, models):
        if getattr(method, "estimator", None) is None:
            raise RunDirError(f"{rec.path}: method {rec.get('method')!r} has no uncertainty estimator to show")
    adapter0 = models[0][1]
    case_ids = _case_ids(adapter0, cases, n_cases)
    width = _panel_width(len(records))
    fig, axes = new_figure(len(records), len(case_ids), width=width, panel_height=width / len(records) + 0.15)
    for i, cid in enumerate(case_ids):
        case = adapter0.load_case(cid)
        z = _pick_slice(case.label)
        for j, ((cfg, adapter, method), label) in enumerate(zip(models, labels)):
            net = method.inference_module()
            spec = adapter.spec
            with torch.no_grad():
                if spec.dims == 2:
                    size = tuple(cfg.dataset.image_size)
                    resize = cfg.dataset.image_resize
                    x = resize_images(torch.from_numpy(case.image[z][None, None].astype(np.float32)), size, resize)
                    gt = resize_labels(torch.from_numpy(case.label[z][None].astype(np.int64)), size, resize)[0].numpy()
                    umap = method.estimator.estimate(net, x.to(device), None)
                    uncertain = (~umap.certain[0]).cpu().numpy()
                    image = x[0, 0].numpy()
                else:
                    image, gt, uncertain = _masks_3d(method, net, case, z, tuple(cfg.dataset.patch_size), device)
            ax = axes[i][j]
            _show_image(ax, image)
            overlay = np.zeros((*uncertain.shape, 4))
            overlay[uncertain] = (*to_rgb(VERMILLION), 0.6)
            ax.imshow(overlay, interpolation="nearest")
            if gt.any():
                ax.contour(gt > 0, levels=[0.5], colors=YELLOW, linewidths=1.0)
            if i == 0:
                ax.set_title(label)
            if j == 0:
                ax.set_ylabel(cid)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    figure_legend(
        fig,
        [
            Patch(color=VERMILLION, alpha=0.6, label="uncertain region"),
            Line2D([], [], color=YELLOW, label="ground truth"),
        ],
    )
    return fig


def _masks_3d(
    method: Any, net: Any, case: Any, z: int, patch: tuple[int, ...], device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    image, label = case.image, case.label
    fg = np.argwhere(label > 0)
    centre = fg.mean(0).astype(int) if len(fg) else np.array(image.shape) // 2
    centre[0] = z
    starts = [int(np.clip(c - p // 2, 0, max(0, s - p))) for c, p, s in zip(centre, patch, image.shape)]
    sl = tuple(slice(s, s + p) for s, p in zip(starts, patch))
    crop, gt = image[sl], label[sl]
    pad = [(0, max(0, p - s)) for p, s in zip(patch, crop.shape)]
    crop, gt = np.pad(crop, pad), np.pad(gt, pad)
    x = torch.from_numpy(crop[None, None].astype(np.float32)).to(device)
    umap = method.estimator.estimate(net, x, None)
    k = z - starts[0]
    return crop[k], gt[k], (~umap.certain[0]).cpu().numpy()[k]


@paper_style
def fig_overlays(
    run_dirs: Iterable[str | Path | RunRecord],
    cases: Sequence[str] | None = None,
    n_cases: int = 3,
    device: str = "cpu",
) -> Any:
    """Fig. 6/7: contours of every run's test prediction against the ground truth (red) on one panel per case
    (binary tasks); Fig. 9: for multi-class data, a row per case with the ground truth and each run's per-class
    fills. Each case is shown at its slice with the largest foreground, at native resolution."""
    from ssl_bench.evaluation.evaluate import volume_predictor

    records = _records(run_dirs)
    labels = run_labels(records)
    models = [_load_model(rec, device) for rec in records]
    datasets = {cfg.dataset.name for cfg, _, _ in models}
    if len(datasets) > 1:
        raise RunDirError(f"overlays compare runs on one dataset; got {sorted(datasets)}")
    adapter0 = models[0][1]
    case_ids = _case_ids(adapter0, cases, n_cases)
    k = adapter0.spec.num_classes
    preds: dict[str, list[np.ndarray]] = {}
    cases_loaded = {cid: adapter0.load_case(cid) for cid in case_ids}
    for cfg, adapter, method in models:
        size, resize = tuple(cfg.dataset.image_size), cfg.dataset.image_resize
        predictor = volume_predictor(method.predict, adapter.spec.dims, cfg.eval, size, device, resize)
        for cid in case_ids:
            preds.setdefault(cid, []).append(predictor(cases_loaded[cid].image))
    if k == 2:
        width = _panel_width(len(case_ids))
        fig, axes = new_figure(len(case_ids), 1, width=width, panel_height=width / len(case_ids) + 0.15)
        for ax, cid in zip(axes[0], case_ids):
            case = cases_loaded[cid]
            z = _pick_slice(case.label)
            _show_image(ax, case.image[z])
            handles = []
            from matplotlib.lines import Line2D

            if case.label[z].any():
                ax.contour(case.label[z] > 0, levels=[0.5], colors=YELLOW, linewidths=1.4)
            handles.append(Line2D([], [], color=YELLOW, label="ground truth"))
            for r, (pred, label) in enumerate(zip(preds[cid], labels)):
                run_colour = RUN_COLOURS[r % len(RUN_COLOURS)]
                if pred[z].any():
                    ax.contour(pred[z] > 0, levels=[0.5], colors=run_colour, linewidths=1.0)
                handles.append(Line2D([], [], color=run_colour, label=label))
            ax.set_title(cid)
        figure_legend(fig, handles)
        return fig
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([(0, 0, 0, 0), *[CLASS_COLOURS[i % len(CLASS_COLOURS)] for i in range(k - 1)]])
    width = _panel_width(1 + len(records))
    fig, axes = new_figure(1 + len(records), len(case_ids), width=width, panel_height=width / (1 + len(records)) + 0.15)
    names = _class_names(records)
    for i, cid in enumerate(case_ids):
        case = cases_loaded[cid]
        z = _pick_slice(case.label)
        for j, (maps, title) in enumerate([(case.label, "ground truth"), *zip(preds[cid], labels)]):
            ax = axes[i][j]
            _show_image(ax, case.image[z])
            ax.imshow(np.ma.masked_equal(maps[z], 0), cmap=cmap, vmin=0, vmax=k - 1, alpha=0.5, interpolation="nearest")
            for c in range(1, k):
                if (maps[z] == c).any():
                    ax.contour(maps[z] == c, levels=[0.5], colors=[CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]])
            if i == 0:
                ax.set_title(title)
            if j == 0:
                ax.set_ylabel(cid)
    from matplotlib.patches import Patch

    handles = [
        Patch(color=CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)], label=names.get(c, str(c))) for c in range(1, k)
    ]
    figure_legend(fig, handles, title="class", ncols=len(handles))
    return fig


# -- saving ---------------------------------------------------------------------------------------------------------


def save_figure(fig: Any, out: str | Path) -> list[Path]:
    """Write ``fig`` as ``<out>.png`` (300 dpi) and the vector ``<out>.pdf`` beside it (text kept as text; the
    suffix of ``out``, if any, is replaced)."""
    import matplotlib

    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf", ".svg") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    with matplotlib.rc_context(paper_rc()):
        fig.savefig(paths[0], dpi=300)
        fig.savefig(paths[1], metadata={"CreationDate": None})
    return paths


def make_figure(
    kind: str,
    run_dirs: Iterable[str | Path | RunRecord],
    out: str | Path | None = None,
    *,
    cases: Sequence[str] | None = None,
    region: str = "certain",
    device: str = "cpu",
) -> list[Path]:
    """Build figure ``kind`` (:data:`KINDS`) from ``run_dirs`` and save it (default ``results/figures/<kind>``)."""
    if kind == "fig3":
        fig = fig_pl_quality(run_dirs, region)
    elif kind == "fig4":
        fig = fig_pl_course(run_dirs, region)
    elif kind == "masks":
        fig = fig_masks(run_dirs, cases, device=device)
    elif kind == "overlays":
        fig = fig_overlays(run_dirs, cases, device=device)
    elif kind == "curves":
        fig = fig_curves(run_dirs)
    else:
        raise ValueError(f"unknown figure {kind!r}: use one of {', '.join(KINDS)}")
    return save_figure(fig, out or Path("results/figures") / kind)
