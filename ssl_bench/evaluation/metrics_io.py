"""Loading label maps from files and scoring prediction files/folders against references.

Backs the ``ssl-bench metrics PRED REF`` command. Supported formats: NIfTI (``.nii``, ``.nii.gz``, via nibabel),
NumPy (``.npy``) and HDF5 (``.h5``, ``.hdf5``, dataset ``label``, the SSL4MIS layout).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.core.errors import MetricInputError
from ssl_bench.evaluation.metrics import segmentation_metrics

__all__ = ["SUPPORTED_EXTENSIONS", "case_name", "load_label_map", "score_paths"]

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".npy", ".h5", ".hdf5")
_H5_DATASET = "label"


def _extension(path: Path) -> str | None:
    name = path.name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return None


def case_name(path: str | Path) -> str:
    """File name without its (supported) extension, e.g. ``patient001_frame01.nii.gz`` -> ``patient001_frame01``."""
    path = Path(path)
    ext = _extension(path)
    return path.name[: -len(ext)] if ext else path.name


def load_label_map(path: str | Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Reads a label map and, where the format stores it, its voxel spacing.

    * ``.nii`` / ``.nii.gz`` (nibabel): the voxel array in the file's own axis order (NIfTI: i, j, k, usually
      x, y, z; it is NOT reoriented or transposed to (Z, Y, X)) and the spacing from the header zooms, in the same
      order, in the header's spatial unit (normally mm). Trailing singleton axes beyond the third are dropped.
    * ``.npy``: the array as saved; spacing None.
    * ``.h5`` / ``.hdf5`` (h5py): dataset ``label`` (e.g. (Z, H, W) in the SSL4MIS files); spacing from its
      ``spacing`` attribute if it has one (``ssl-bench predict --split`` writes it), else None.

    Args:
        path: file to read.

    Returns:
        ``(labels, spacing)``: the array (any shape/dtype as stored; checked later by the metrics) and a tuple of
        one voxel size per array axis, or None when the format has no spacing.

    Raises:
        MetricInputError: missing file, unknown extension, unreadable file, missing ``label`` dataset (the message
            lists the datasets present).
    """
    path = Path(path)
    labels, spacing = _read_label_map(path)
    if labels.dtype.kind == "f" and labels.size and not np.isfinite(labels).all():
        bad = int(np.count_nonzero(~np.isfinite(labels)))
        raise MetricInputError(f"{path}: label map holds {bad} NaN/inf values; labels must be integers")
    return labels, spacing


def _read_label_map(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    ext = _extension(path)
    if ext is None:
        raise MetricInputError(
            f"{path}: unknown label-map file extension; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not path.is_file():
        raise MetricInputError(f"{path}: no such file")
    try:
        if ext in (".nii", ".nii.gz"):
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
            while arr.ndim > 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
            return np.asarray(arr), zooms
        if ext == ".npy":
            return np.load(path, allow_pickle=False), None
        import h5py

        with h5py.File(path, "r") as f:
            if _H5_DATASET not in f or not isinstance(f[_H5_DATASET], h5py.Dataset):
                available = sorted(f.keys())
                raise MetricInputError(
                    f"{path}: HDF5 file has no dataset {_H5_DATASET!r}; available: {available or 'none'}"
                )
            spacing = f[_H5_DATASET].attrs.get("spacing")  # written by `ssl-bench predict --split`
            return f[_H5_DATASET][()], None if spacing is None else tuple(float(s) for s in np.ravel(spacing))
    except MetricInputError:
        raise
    except Exception as exc:  # corrupt / truncated / wrong format
        raise MetricInputError(f"{path}: cannot read label map ({type(exc).__name__}: {exc})") from exc


def _pairs(pred: Path, ref: Path) -> list[tuple[str, Path, Path]]:
    """(case, pred_file, ref_file) triples for two files or two folders."""
    if not pred.exists():
        raise MetricInputError(f"{pred}: prediction path does not exist")
    if not ref.exists():
        raise MetricInputError(f"{ref}: reference path does not exist")
    if pred.is_file() and ref.is_file():
        return [(case_name(ref), pred, ref)]
    if not (pred.is_dir() and ref.is_dir()):
        raise MetricInputError(f"PRED and REF must both be files or both be folders; got {pred} and {ref}")

    def listing(folder: Path) -> dict[str, Path]:
        return {
            p.name: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".") and _extension(p)
        }

    refs = listing(ref)
    preds = listing(pred)
    if not refs:
        raise MetricInputError(f"{ref}: no label files ({', '.join(SUPPORTED_EXTENSIONS)}) in reference folder")
    missing = sorted(set(refs) - set(preds))
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise MetricInputError(f"{pred}: no prediction for {len(missing)} reference file(s): {shown}")
    extra = sorted(set(preds) - set(refs))
    if extra:
        shown = ", ".join(extra[:20]) + (", ..." if len(extra) > 20 else "")
        warnings.warn(
            f"{pred}: {len(extra)} prediction file(s) without a reference are ignored: {shown}",
            UserWarning,
            stacklevel=3,
        )
    return [(case_name(refs[n]), preds[n], refs[n]) for n in refs]


def score_paths(
    pred: str | Path,
    ref: str | Path,
    classes: Iterable[int] | None,
    spacing: Sequence[float] | None = None,
    backend: str = "ssl-bench",
    *,
    metrics: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Scores a prediction file against a reference file, or a folder of predictions against a folder of references.

    Folders are matched by file name, as nnU-Net's evaluate-folder does: every label file in REF must have a
    file of the same name in PRED (otherwise an error lists the missing ones); prediction files without a
    reference are ignored with a ``UserWarning``. Files with other extensions and hidden files are skipped.

    Spacing: an explicit ``spacing`` wins (assumed to be in mm); otherwise the NIfTI header zooms (or the HDF5
    ``label`` attribute ``spacing``) of the reference; otherwise none (distances in voxels). Each row's
    ``spacing_unit`` says which (``"mm"`` or ``"voxel"``). A prediction whose spacing differs from the reference's
    triggers a warning.

    Args:
        pred: prediction file or folder.
        ref: reference file or folder.
        classes: labels to score; None scores every label > 0 present in each reference.
        spacing: voxel size per array axis (in the files' axis order) or None.
        backend: ``"ssl-bench"`` or ``"medpy"``, see :func:`ssl_bench.evaluation.metrics.segmentation_metrics`.
        metrics: optional subset of the metric names.

    Returns:
        One row per (case, class), cases sorted by file name: ``{"case": name, "class": k, "spacing_unit": ...,
        **metrics}`` with the fields of :func:`ssl_bench.evaluation.metrics.segmentation_metrics`.

    Raises:
        MetricInputError: missing/unreadable files, unmatched folders and every input error of the metrics (the
            message names the case).
    """
    fixed = None if classes is None else tuple(classes)
    pairs = _pairs(Path(pred), Path(ref))
    if fixed is None:  # every label > 0 of any reference: a case with an empty reference is scored, not skipped
        seen = {int(v) for _, _, r in pairs for v in np.unique(load_label_map(r)[0]) if v > 0}
        if not seen:  # no reference has a label: score what the predictions hold (all 0 against empty)
            seen = {int(v) for _, p, _ in pairs for v in np.unique(load_label_map(p)[0]) if v > 0}
        if not seen:
            raise MetricInputError("every reference and prediction is empty (only 0): pass --classes to score them")
        fixed = tuple(sorted(seen))
    rows: list[dict[str, Any]] = []
    for name, pred_file, ref_file in pairs:
        p, p_sp = load_label_map(pred_file)
        r, r_sp = load_label_map(ref_file)
        if spacing is not None:
            sp, unit = tuple(spacing), "mm"
        elif r_sp is not None:
            sp, unit = r_sp, "mm"
            if p_sp is not None and (
                len(p_sp) != len(r_sp)
                or not all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(p_sp, r_sp, strict=True))
            ):
                warnings.warn(
                    f"case {name!r}: prediction spacing {p_sp} differs from reference spacing {r_sp}; "
                    f"using the reference's",
                    UserWarning,
                    stacklevel=2,
                )
        else:
            sp, unit = None, "voxel"
        allowed = None if classes is not None else tuple(int(v) for v in np.union1d(np.unique(p), np.unique(r)))
        try:
            result = segmentation_metrics(
                p, r, fixed, sp, metrics=metrics, backend=backend, case=name, allowed_labels=allowed
            )
        except MetricInputError as exc:  # name the files, not only the case
            raise MetricInputError(f"{pred_file} vs {ref_file}: {exc}") from exc
        for k, values in result.items():
            rows.append({"case": name, "class": k, "spacing_unit": unit, **values})
    return rows
