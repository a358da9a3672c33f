"""ACDC (MICCAI 2017 Automated Cardiac Diagnosis Challenge) in the SSL4MIS HDF5 layout.

Bernard et al., "Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures Segmentation and Diagnosis:
Is the Problem Solved?", IEEE TMI 37(11), 2018. Layout and splits as published by SSL4MIS (Luo et al.,
github.com/HiLab-git/SSL4MIS, data/ACDC)::

    <root>/train.list  val.list  test.list      volume ids (patientNNN_frameMM), 70/10/20 patients
    <root>/train_slices.list                    training slice ids (<volume>_slice_<k>)
    <root>/data/slices/<slice id>.h5            'image' (H, W) float32 in [0, 1], 'label' (H, W) uint8
    <root>/data/<volume id>.h5                  'image' (Z, H, W), 'label' (Z, H, W) (val/test volumes)

Some copies keep the slice files directly in ``data/``; both are accepted. Labels: 0 background, 1 RV, 2 Myo,
3 LV. No voxel spacing is stored in this layout, so distances are in voxels (as the CoraNet paper reports HD).
The root comes from ``--data-root`` or ``$SSL_BENCH_ACDC``.

Deviations from SSL4MIS: slices are resized to the training size with bilinear interpolation for images and
nearest for labels (SSL4MIS uses nearest, order 0, for both).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ssl_bench.data import Case, DatasetAdapter, SliceSet, TaskSpec, validate_label
from ssl_bench.errors import DataError
from ssl_bench.registry import DATASETS

SPLIT_FILES = {"train": "train.list", "val": "val.list", "test": "test.list"}


def read_list(path: Path) -> list[str]:
    """Non-empty stripped lines of a ``*.list`` file."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read split list {path}: {exc}") from exc


def read_h5(path: Path, keys: Sequence[str] = ("image", "label")) -> list[np.ndarray]:
    """Datasets ``keys`` of an HDF5 file, with errors that name the file and what it contains."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in keys if k not in fh]
            if missing:
                raise DataError(f"{path}: no dataset {missing} (found {sorted(fh.keys())})")
            return [fh[k][()] for k in keys]
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc


@DATASETS.register("acdc")
class ACDC(DatasetAdapter):
    """ACDC cine-MR, 4 classes (RV, Myo, LV), SSL4MIS HDF5 layout; 70/10/20 patients."""

    spec = TaskSpec(dims=2, num_classes=4, label_names=("background", "RV", "Myo", "LV"), modality="MR")
    root_env = "SSL_BENCH_ACDC"
    spacing_unit = "voxel"
    presets = {
        "cpu": {"dataset.image_size": (128, 128)},
        "paper": {"dataset.image_size": (256, 256)},
    }

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)
        if self.root is None or not self.root.is_dir():
            raise DataError(f"ACDC root {root!r} is not a folder; pass --data-root DIR or set $SSL_BENCH_ACDC")
        missing = [f for f in (*SPLIT_FILES.values(), "train_slices.list") if not (self.root / f).is_file()]
        if missing or not (self.root / "data").is_dir():
            raise DataError(
                f"{self.root} does not look like the SSL4MIS ACDC layout: missing {missing or ['data/']} "
                "(expected train.list, val.list, test.list, train_slices.list and data/; see README, Datasets)"
            )
        self._splits = {split: read_list(self.root / name) for split, name in SPLIT_FILES.items()}
        self._slice_dir = self.root / "data" / "slices"
        if not self._slice_dir.is_dir():
            self._slice_dir = self.root / "data"

    def splits(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._splits.items()}

    def group(self, case_id: str) -> str:
        match = re.match(r"(patient\d+)", case_id)
        return match.group(1) if match else case_id

    def load_case(self, case_id: str) -> Case:
        path = self.root / "data" / f"{case_id}.h5"  # type: ignore[operator]
        if not path.is_file() and any(case_id in v for v in self._splits.values()):
            raise DataError(
                f"volume file {path} is missing (SSL4MIS ships volumes for val/test cases only; "
                "training uses data/slices)"
            )
        image, label = read_h5(path)
        if image.ndim != 3 or image.shape != label.shape:
            raise DataError(
                f"{path}: expected image and label of equal shape (Z, H, W), got {image.shape} and {label.shape}"
            )
        label = validate_label(label, self.spec.num_classes, str(path))
        return Case(case_id, image.astype(np.float32, copy=False), label, None, self.group(case_id))

    def training_slices(self, case_ids: Sequence[str]) -> SliceSet:
        wanted = set(case_ids)
        ids = [s for s in read_list(self.root / "train_slices.list") if s.rsplit("_slice_", 1)[0] in wanted]  # type: ignore[operator]
        if not ids:
            raise DataError(f"no training slices in train_slices.list for volumes {sorted(wanted)[:4]}...")
        images, labels, owners = [], [], []
        for sid in ids:
            path = self._slice_dir / f"{sid}.h5"
            image, label = read_h5(path)
            if image.ndim != 2 or image.shape != label.shape:
                raise DataError(
                    f"{path}: expected 2D image and label of equal shape, got {image.shape} and {label.shape}"
                )
            images.append(image.astype(np.float32, copy=False)[None])
            labels.append(validate_label(label, self.spec.num_classes, str(path)))
            owners.append(sid.rsplit("_slice_", 1)[0])
        return SliceSet(images, labels, owners)
