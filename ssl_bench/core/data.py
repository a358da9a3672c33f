"""Dataset adapter interface and the training-sample containers built from it.

A :class:`DatasetAdapter` does I/O only: it knows its task (:class:`TaskSpec`), its splits (case ids = volumes,
grouped by patient), how to load one case and, for 2D training, how to enumerate training slices. Resizing,
augmentation and batching are generic and live in :mod:`ssl_bench.core.transforms` / :mod:`ssl_bench.training.streams`.

Array conventions (numpy, as loaded):
    image: ``(Z, Y, X)`` float32 (a 2D-only source uses ``Z = 1``), intensities already normalised;
    label: ``(Z, Y, X)`` uint8 with values in ``0 .. num_classes - 1``;
    spacing: ``(sz, sy, sx)`` in mm, or ``None`` when the source stores none (distances are then in voxels).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ssl_bench.core.errors import DataError


@dataclass(frozen=True)
class TaskSpec:
    """What a dataset asks of a network.

    Attributes:
        dims: 2 if methods train on 2D slices, 3 if on 3D patches.
        num_classes: number of classes including background (label values ``0 .. num_classes - 1``).
        label_names: one name per class, background first.
        in_channels: image channels.
        modality: e.g. ``"MR"``, ``"CT"``.
    """

    dims: int
    num_classes: int
    label_names: tuple[str, ...]
    in_channels: int = 1
    modality: str = "MR"

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"TaskSpec.dims must be 2 or 3, got {self.dims}")
        if len(self.label_names) != self.num_classes:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_classes} classes")

    @property
    def foreground_classes(self) -> tuple[int, ...]:
        return tuple(range(1, self.num_classes))


@dataclass
class Case:
    """One volume (the unit of evaluation). Shapes: image/label ``(Z, Y, X)``."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...] | None = None
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SliceSet:
    """2D training samples kept in memory (slices may differ in size; they are resized to the training size
    by :func:`ssl_bench.core.transforms.prepare_slices`).

    Attributes:
        images: N arrays ``(C, H, W)`` float32.
        labels: N arrays ``(H, W)`` uint8.
        case_ids: the volume each slice came from.
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    case_ids: list[str]

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.labels) == len(self.case_ids)):
            raise ValueError("SliceSet: images, labels and case_ids differ in length")

    def __len__(self) -> int:
        return len(self.images)


def validate_label(label: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Check that ``label`` holds integers in ``0 .. num_classes - 1``; returns it as uint8."""
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or not np.all(np.equal(np.mod(label, 1), 0)):
            raise DataError(f"{where}: label map holds non-integer values (dtype {label.dtype})")
    elif label.dtype.kind not in "iub":
        raise DataError(f"{where}: label map has non-numeric dtype {label.dtype}")
    if label.size:
        lo, hi = int(label.min()), int(label.max())
        if lo < 0 or hi >= num_classes:
            bad = sorted({int(v) for v in np.unique(label) if v < 0 or v >= num_classes})
            raise DataError(
                f"{where}: label values {bad[:10]} are outside 0..{num_classes - 1} "
                f"({num_classes} classes expected for this dataset)"
            )
    return label.astype(np.uint8, copy=False)


def validate_image(image: np.ndarray, where: str) -> np.ndarray:
    """Check that ``image`` is numeric and finite (a NaN/inf is a data error naming ``where``); returns it."""
    if image.dtype.kind not in "fiub":
        raise DataError(f"{where}: image has non-numeric dtype {image.dtype}")
    if image.dtype.kind == "f" and image.size and not np.isfinite(image).all():
        bad = np.count_nonzero(~np.isfinite(image))
        raise DataError(f"{where}: image holds {bad} NaN/inf values (fix or exclude this file)")
    return image


def check_case(case: Case, num_classes: int, where: str = "") -> None:
    """Everything a run needs of an evaluated case: a label, image and label of equal shape, integer labels in
    ``0 .. num_classes - 1``, finite image values. Raises DataError naming ``where`` (the file, else the case)."""
    where = where or str(case.meta.get("file") or f"case {case.case_id}")
    if case.label is None:
        raise DataError(f"{where}: case {case.case_id} has no label")
    if tuple(case.image.shape) != tuple(case.label.shape):
        raise DataError(f"{where}: image shape {tuple(case.image.shape)} != label shape {tuple(case.label.shape)}")
    validate_label(case.label, num_classes, where)
    validate_image(case.image, where)


class DatasetAdapter(ABC):
    """Base class of dataset plugins (register with ``@DATASETS.register(name)``).

    Subclasses set :attr:`spec` and implement :meth:`splits` and :meth:`load_case`; 2D datasets whose training
    data come as slice files override :meth:`training_slices`. ``root`` is the data folder (``None`` for
    built-in generated data); a wrong root must raise :class:`~ssl_bench.core.errors.DataError` in ``__init__``
    saying what was expected there.
    """

    spec: ClassVar[TaskSpec]
    #: True if the dataset needs ``--data-root`` (or its environment variable).
    needs_root: ClassVar[bool] = True
    #: Environment variable naming the default root (e.g. ``SSL_BENCH_ACDC``).
    root_env: ClassVar[str | None] = None
    #: Config overrides per preset name, applied after the global preset (dotted keys, e.g. ``data.image_size``).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Where distances are measured: "mm" if the cases carry spacing, else "voxel".
    spacing_unit: ClassVar[str] = "mm"

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else None

    @abstractmethod
    def splits(self) -> dict[str, list[str]]:
        """Case ids per split: keys ``train``, ``val``, ``test`` (patient-disjoint)."""

    @abstractmethod
    def load_case(self, case_id: str) -> Case:
        """Load one volume (image and label, see module docstring for shapes)."""

    def split_info(self, selection: str = "first") -> dict[str, Any] | None:
        """What a run records about its split (file, sha256, version, protocol); None for generated data."""
        return None

    @classmethod
    def missing(cls, problem: str) -> str:
        """Error text for a missing or wrong data folder (real-data adapters add the download page and layout)."""
        return f"{problem} (see README, section Datasets)"

    def group(self, case_id: str) -> str:
        """Patient id of a case (labelled budgets and splits are per patient). Default: the case id."""
        return case_id

    def training_slices(self, case_ids: Sequence[str]) -> SliceSet:
        """2D training slices of ``case_ids`` (default: every axial slice of the loaded volumes)."""
        images, labels, owners = [], [], []
        for cid in case_ids:
            case = self.load_case(cid)
            if case.label is None:
                raise DataError(f"case {cid} has no label; training cases need one")
            validate_image(case.image, str(case.meta.get("file") or f"case {cid}"))
            for z in range(case.image.shape[0]):
                images.append(case.image[z][None].astype(np.float32, copy=False))
                labels.append(case.label[z].astype(np.uint8, copy=False))
                owners.append(cid)
        return SliceSet(images, labels, owners)

    # -- labelled / unlabelled selection (generic, per patient) --------------------------------------------

    def patients(self, split: str) -> list[str]:
        """Patients of a split in list order (first occurrence)."""
        seen: dict[str, None] = {}
        for cid in self.splits()[split]:
            seen.setdefault(self.group(cid), None)
        return list(seen)

    def labelled_patients(self, labeled: float | int, selection: str = "first", seed: int = 0) -> list[str]:
        """Choose the labelled training patients.

        Args:
            labeled: a fraction in (0, 1] of the training patients, or an integer count of patients
                (``1.0`` means all of them).
            selection: ``"first"`` takes them in split-list order (the SSL4MIS convention, so budgets are nested
                and identical across seeds); ``"random"`` draws them with ``seed``.
            seed: used only by ``"random"``.
        """
        patients = self.patients("train")
        n = count_from_budget(labeled, len(patients))
        if selection == "first":
            return patients[:n]
        if selection == "random":
            rng = np.random.default_rng(seed)
            return [patients[i] for i in sorted(rng.choice(len(patients), size=n, replace=False))]
        raise DataError(f"unknown labelled selection {selection!r}: use 'first' or 'random'")


def count_from_budget(labeled: float | int, total: int) -> int:
    """Number of labelled patients for a budget given as a fraction (<= 1.0) or an integer count."""
    if isinstance(labeled, bool) or labeled <= 0:
        raise DataError(f"labelled budget must be a positive fraction or count, got {labeled!r}")
    if isinstance(labeled, float) and labeled <= 1.0:
        n = max(1, int(math.floor(labeled * total + 1e-9)))
    else:
        if float(labeled) != int(labeled):
            raise DataError(f"labelled budget {labeled!r} > 1 must be an integer patient count")
        n = int(labeled)
    if n > total:
        raise DataError(f"labelled budget {labeled!r} asks for {n} patients but the training split has {total}")
    return n
