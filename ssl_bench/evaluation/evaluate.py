"""Inference on whole cases and scoring: ``per_case.csv`` + ``summary.json``.

2D methods on volumes (the SSL4MIS/ACDC convention): every slice is resized to the training size, predicted,
and resized back, slices are re-stacked and the *volume* is scored. ``dataset.image_resize="bilinear"``: bilinear
in, logits resized back bilinearly, then the arg-max; ``"nearest"`` (SSL4MIS ``val_2D.test_single_volume``):
scipy-zoom order 0 in, arg-max at the training size, the label map zoomed back with order 0.
3D methods use sliding-window inference (:mod:`ssl_bench.evaluation.inference`).
``eval.per_slice=true`` scores every slice as its own case instead (named ``<case>:z<k>``).

Distances are reported in mm when the dataset has a spacing (``hd``, ``hd95``, ``asd``, ``assd``) and always
also in voxel units (``*_vox``), since the CoraNet paper reports HD in voxels.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_bench.core.data import DatasetAdapter
from ssl_bench.core.errors import DataError
from ssl_bench.core.io import atomic_write, atomic_write_json
from ssl_bench.core.transforms import check_image_resize, resize_images, resize_labels
from ssl_bench.evaluation.metrics import EMPTY_POLICY, EMPTY_POLICY_TEXT, segmentation_metrics

DISTANCE_METRICS = ("hd", "hd95", "asd", "assd")
OVERLAP_METRICS = ("dice", "jaccard", "precision", "recall")
COUNT_KEYS = ("tp", "fp", "fn", "n_ref", "n_pred")
CSV_METRICS = (*OVERLAP_METRICS, *DISTANCE_METRICS, *(f"{m}_vox" for m in DISTANCE_METRICS))


def _slice_logits(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    size: tuple[int, int],
    batch_size: int,
    device: torch.device | str,
    image_resize: str,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first slice, logits [B, K, *size])`` per batch of slices of a ``(Z, Y, X)`` volume at the training size."""
    check_image_resize(image_resize)
    if image.ndim != 3:
        raise DataError(f"expected a (Z, Y, X) volume, got shape {image.shape}")
    for start in range(0, image.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(image[start : start + batch_size], dtype=np.float32))[:, None]
        logits = predict(resize_images(x.to(device), size, image_resize)).float()
        if not torch.isfinite(logits).all():
            raise DataError("the model produced NaN/inf logits; the checkpoint is broken (NaN weights?)")
        yield start, logits


@torch.no_grad()
def predict_volume_2d(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    size: tuple[int, int],
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    image_resize: str = "bilinear",
) -> np.ndarray:
    """Slice-wise prediction of a volume.

    Args:
        predict: logits function ``[B, 1, h, w] -> [B, K, h, w]``.
        image: ``(Z, Y, X)`` float volume.
        size: the training slice size ``(h, w)``.
        image_resize: ``dataset.image_resize`` (see the module docstring).

    Returns:
        ``(Z, Y, X)`` uint8 label map.
    """
    out = np.empty(image.shape, dtype=np.uint8)
    native = tuple(image.shape[1:])
    for start, logits in _slice_logits(predict, image, size, batch_size, device, image_resize):
        if image_resize == "nearest":  # arg-max, then the label map zoomed back with order 0 (SSL4MIS)
            pred = resize_labels(logits.argmax(1), native, "nearest")
        else:  # bilinear on logits, then arg-max
            pred = resize_images(logits, native).argmax(1)
        out[start : start + batch_size] = pred.to(torch.uint8).cpu().numpy()
    return out


@torch.no_grad()
def predict_probabilities_2d(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    size: tuple[int, int],
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    image_resize: str = "bilinear",
) -> np.ndarray:
    """Class probabilities ``[K, Z, Y, X]`` float32 of :func:`predict_volume_2d`'s prediction (its arg-max):
    softmax of the logits resized back (``"bilinear"``), or the softmax zoomed back with order 0 (``"nearest"``)."""
    out: np.ndarray | None = None
    native = tuple(image.shape[1:])
    for start, logits in _slice_logits(predict, image, size, batch_size, device, image_resize):
        if image_resize == "nearest":
            probs = resize_images(logits.softmax(1), native, "nearest")
        else:
            probs = resize_images(logits, native).softmax(1)
        if out is None:
            out = np.empty((probs.shape[1], *image.shape), dtype=np.float32)
        out[:, start : start + batch_size] = probs.permute(1, 0, 2, 3).cpu().numpy()
    assert out is not None
    return out


def score_case(
    case_id: str,
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float] | None,
    backend: str = "ssl-bench",
    metrics: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per class: every metric (distances in mm if ``spacing`` is given, plus ``*_vox``) and counts."""
    metrics = tuple(metrics) if metrics is not None else None
    res = segmentation_metrics(pred, ref, classes, spacing=spacing, metrics=metrics, backend=backend, case=case_id)
    wants_distance = metrics is None or any(m in DISTANCE_METRICS for m in metrics)
    if spacing is not None and wants_distance:
        dist = [m for m in DISTANCE_METRICS if metrics is None or m in metrics]
        vox = segmentation_metrics(pred, ref, classes, spacing=None, metrics=dist, backend=backend, case=case_id)
    else:
        vox = res
    rows = []
    for k in classes:
        row: dict[str, Any] = {"case": case_id, "class": int(k)}
        for m in (*OVERLAP_METRICS, *DISTANCE_METRICS):
            if m in res[k]:
                row[m] = float(res[k][m])
        for m in DISTANCE_METRICS:
            if m in vox[k]:
                row[f"{m}_vox"] = float(vox[k][m])
        for c in COUNT_KEYS:
            row[c] = int(res[k][c])
        row["empty"] = res[k].get("empty", "none")
        rows.append(row)
    return rows


def _autocast_predict(
    predict: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predict`` under CUDA autocast (bf16 where supported, else fp16), channels-last 2D input."""
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype):
            return predict(x)

    return run


def volume_predictor(
    predict: Callable[[torch.Tensor], torch.Tensor],
    dims: int,
    eval_cfg: Any,
    image_size: tuple[int, int],
    device: torch.device | str = "cpu",
    image_resize: str = "bilinear",
) -> Callable[[np.ndarray], np.ndarray]:
    """``(Z, Y, X)`` volume -> label map: slice-wise for 2D methods (``image_resize``: ``dataset.image_resize``),
    sliding window for 3D methods."""
    if getattr(eval_cfg, "amp", False) and torch.device(device).type == "cuda":
        predict = _autocast_predict(predict, torch.device(device))
    if dims == 2:
        return lambda image: predict_volume_2d(predict, image, image_size, eval_cfg.batch_size, device, image_resize)
    from ssl_bench.evaluation.inference import predict_volume_3d

    return lambda image: predict_volume_3d(
        predict,
        image,
        eval_cfg.patch_size,
        eval_cfg.stride,
        blend=eval_cfg.blend,
        batch_size=eval_cfg.batch_size,
        device=device,
    )


def volume_probabilities(
    predict: Callable[[torch.Tensor], torch.Tensor],
    dims: int,
    eval_cfg: Any,
    image_size: tuple[int, int],
    device: torch.device | str = "cpu",
    image_resize: str = "bilinear",
) -> Callable[[np.ndarray], np.ndarray]:
    """``(Z, Y, X)`` volume -> ``[K, Z, Y, X]`` float32 probabilities whose arg-max is :func:`volume_predictor`'s
    label map."""
    if dims == 2:
        return lambda image: predict_probabilities_2d(
            predict, image, image_size, eval_cfg.batch_size, device, image_resize
        )
    from ssl_bench.evaluation.inference import sliding_window_probs

    def probabilities(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        kwargs = {"blend": eval_cfg.blend, "batch_size": eval_cfg.batch_size, "device": device}
        return sliding_window_probs(predict, x, eval_cfg.patch_size, eval_cfg.stride, **kwargs).numpy()

    return probabilities


def evaluate_cases(
    predict_volume: Callable[[np.ndarray], np.ndarray],
    adapter: DatasetAdapter,
    case_ids: Sequence[str],
    *,
    per_slice: bool = False,
    backend: str = "ssl-bench",
    metrics: Iterable[str] | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> list[dict[str, Any]]:
    """Predict (with :func:`volume_predictor`) and score ``case_ids``; per-case-per-class rows (:func:`score_case`).
    Under ``torchrun`` each rank scores its shard of the cases and the rows of all cases are gathered on every
    rank, in case order (the same rows as one process)."""
    from ssl_bench.core.distributed import gather_sharded, shard

    mine = shard(case_ids)
    iterator: Iterable[str] = progress(mine) if progress else mine
    per_case = [_score_one(predict_volume, adapter, cid, per_slice, backend, metrics) for cid in iterator]
    return [row for rows in gather_sharded(per_case, len(case_ids)) for row in rows]


def _score_one(
    predict_volume: Callable[[np.ndarray], np.ndarray],
    adapter: DatasetAdapter,
    cid: str,
    per_slice: bool,
    backend: str,
    metrics: Iterable[str] | None,
) -> list[dict[str, Any]]:
    classes = adapter.spec.foreground_classes
    rows: list[dict[str, Any]] = []
    case = adapter.load_case(cid)
    if case.label is None:
        raise DataError(f"case {cid} has no label and cannot be evaluated")
    if case.image.shape != case.label.shape:
        raise DataError(f"case {cid}: image shape {case.image.shape} != label shape {case.label.shape}")
    pred = predict_volume(case.image)
    if per_slice:
        spacing2d = None if case.spacing is None else tuple(case.spacing[1:])
        for z in range(pred.shape[0]):
            rows += score_case(f"{cid}:z{z}", pred[z], case.label[z], classes, spacing2d, backend, metrics)
    else:
        rows += score_case(cid, pred, case.label, classes, case.spacing, backend, metrics)
    return rows


def _stats(values: list[float]) -> dict[str, float | int]:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    n = int(finite.size)
    return {
        "mean": float(finite.mean()) if n else math.nan,
        "std": float(finite.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan),
        "n": n,
        "n_nan": int(arr.size - n),
    }


def summarize(
    rows: list[dict[str, Any]], label_names: Sequence[str], spacing_unit: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Aggregate rows: per class mean/std/n/n_nan of every metric, and the foreground mean.

    The foreground mean of a metric is the mean over classes of the per-class means (each class mean skips NaN
    cases, which are counted in ``n_nan`` — see the empty-mask policy recorded alongside).
    """
    classes = sorted({r["class"] for r in rows})
    metric_keys = [m for m in CSV_METRICS if any(m in r for r in rows)]
    per_class: dict[str, Any] = {}
    for k in classes:
        krows = [r for r in rows if r["class"] == k]
        per_class[str(k)] = {
            "name": label_names[k],
            **{m: _stats([r.get(m, math.nan) for r in krows]) for m in metric_keys},
        }
    fg = {}
    for m in metric_keys:
        means = [per_class[str(k)][m]["mean"] for k in classes]
        finite = [v for v in means if not math.isnan(v)]
        fg[m] = float(np.mean(finite)) if finite else math.nan
    return {
        "n_cases": len({r["case"] for r in rows}),
        "classes": per_class,
        "foreground_mean": fg,
        "spacing_unit": spacing_unit,
        "distance_units": {m: spacing_unit for m in DISTANCE_METRICS} | {f"{m}_vox": "voxel" for m in DISTANCE_METRICS},
        "empty_policy": EMPTY_POLICY,
        "empty_policy_text": EMPTY_POLICY_TEXT,
        **(extra or {}),
    }


def write_eval(folder: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Write ``per_case.csv`` and ``summary.json`` atomically (summary last: its presence marks completion)."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["case", "class", *[m for m in CSV_METRICS if any(m in r for r in rows)], *COUNT_KEYS, "empty"]

    def write_csv(fh: Any) -> None:
        import io

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        fh.write(text.getvalue().encode())

    atomic_write(folder / "per_case.csv", write_csv)
    atomic_write_json(folder / "summary.json", summary)


def mean_foreground_dice(rows: list[dict[str, Any]]) -> float:
    """Model-selection score: mean over classes of the per-class mean Dice (NaN cases skipped)."""
    classes = sorted({r["class"] for r in rows})
    means = []
    for k in classes:
        vals = [r["dice"] for r in rows if r["class"] == k and not math.isnan(r["dice"])]
        if vals:
            means.append(float(np.mean(vals)))
    return float(np.mean(means)) if means else math.nan


def format_summary_table(summary: dict[str, Any], metrics: Sequence[str] = ("dice",), fmt: str = "md") -> str:
    """Per-class table (mean ± std over cases) with a foreground-mean row, in Markdown."""
    header = ["class", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(stats: dict[str, Any], m: str) -> str:
        scale = 100.0 if m in OVERLAP_METRICS else 1.0
        if math.isnan(stats["mean"]):
            return "—"
        return f"{scale * stats['mean']:.2f} ± {scale * stats['std']:.2f}"

    for k, cls in summary["classes"].items():
        lines.append("| " + " | ".join([f"{k} {cls['name']}", *[cell(cls[m], m) for m in metrics]]) + " |")
    fg = summary["foreground_mean"]
    scale = {m: 100.0 if m in OVERLAP_METRICS else 1.0 for m in metrics}
    lines.append("| " + " | ".join(["mean", *[f"{scale[m] * fg[m]:.2f}" for m in metrics]]) + " |")
    return "\n".join(lines)
