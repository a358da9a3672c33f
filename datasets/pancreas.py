"""NIH Pancreas-CT (TCIA): ``pancreas-ct`` (the paper's 2D protocol) and ``pancreas-ct-3d`` (the released 3D code's).

Roth et al., "Data from Pancreas-CT", TCIA 2016, doi:10.7937/K9/TCIA.2016.tNB1kqBU; Roth et al., MICCAI 2015;
Clark et al., J Digit Imaging 2013. 82 portal-venous contrast CTs (512 x 512 x 181-466) of 80 subjects; binary
labels (1 = pancreas). Licence CC BY 3.0 with the TCIA citation policy.

**Raw layout** (both adapters; the root may also be the NBIA ``manifest-*`` folder or hold it)::

    <root>/[manifest-*/]Pancreas-CT/PANCREAS_0001/<study>/<series>/*.dcm      (older downloads: DOI/PANCREAS_0001/...)
    <root>/TCIA_pancreas_labels-02-05-2017/label0001.nii.gz                   (or Pancreas-CT-Label/, labels/, or root)

Reading rules (the NIH label convention, verified by OrganSegRSTN, MC-Net and CoraNet's preprocessing):

* DICOM slices are sorted by ``InstanceNumber`` (``ImagePositionPatient`` z if a file has none); duplicate instance
  numbers, several series, non-axial or changing orientation, or unequal slice sizes are errors naming the file.
* HU = stored value x ``RescaleSlope`` + ``RescaleIntercept`` (DICOM modality LUT), per slice.
* The label NIfTI is an index-aligned array dump: ``label[:, :, k].T`` is the mask of the k-th slice in instance
  order, with no flips; its affine is ignored. The label is therefore transposed ``(x, y, z) -> (z, y, x)`` and must
  then have exactly the image's ``(Z, rows, cols)`` shape; otherwise the case fails loudly (a label stored in
  (rows, cols) order is recognised on non-square slices and named as such).
* PANCREAS_0025 and PANCREAS_0070 are duplicates of PANCREAS_0002 (same scan, cropped differently; TCIA). They
  are in no split; their folders are empty in the current release while the label zip still has 82 files.

**pancreas-ct** (2D, paper §IV-B, Tables II/III): HU clipped to [-100, 240], then min-max normalised per volume to
[0, 1]; every axial slice is cropped to 192 x 240 pixels (rows x cols) with no resampling. Crop placement: the
window is centred on the centre of the volume's pancreas bounding box in the axial plane (union over slices), shifted
to lie inside the image (zero-padded where the image is smaller). **This uses the label, for the training and the
test cases**, as the reference crop ([32], "in a similar way") and the released 3D code do; the paper's own 2D
code is unpublished. All slices are kept (the paper's "1,414 test slices" suggests it kept only slices around the
organ). Split (``datasets/splits/pancreas-ct.json``): 80 cases, 64 train / 16 test by patient (seeded), no
validation split (the last model is tested); labelled:unlabelled 1:4, 1:2, 1:1 of the training set are
``--labeled 13``, ``21``, ``32`` (nested, protocol ``paper``; ``selection=random`` draws per seed).

**pancreas-ct-3d** (CoraNet's released code, Table V): from the raw layout, the reference preprocessing: "resample
to 1 mm" using the in-plane spacing for all three axes (so z is zoomed by the in-plane factor; scipy ``zoom`` order 1
for the image and 0 for the label instead of dipy ``reslice``), HU clipped to [-125, 275], min-max to [0, 1], then
cropped to the **ground-truth** pancreas bounding box + 25 voxels per side, at least 96 voxels per axis where the
volume allows (centred on the box, clipped to the volume; shorter volumes are zero-padded at training time by the
crop sampler). **The crop uses the label for labelled, unlabelled and test cases, as the reference does.** Case
spacing is the physical voxel size of that grid: ``(sz / s_xy, 1, 1)`` mm up to rounding. Also reads the two common
preprocessed HDF5 variants, depth last ``(x, y, z)`` (transposed to ``(z, y, x)``):

    CoraNet:  <root>/[data/]NNNN.h5 (or dataNNNN.h5, the reference writer's missing-separator bug): 'image', 'label'
              (no spacing stored: distances in voxels)
    MC-Net:   <root>/[Pancreas_h5/]imageNNNN_norm.h5: 'image' (z-scored), 'label' float {0, 1}; 1 mm isotropic

Split (``datasets/splits/pancreas-ct-3d.json``, the released lists): labelled 0001-0012, unlabelled 0013-0063 minus
0025 (50), test 0064-0082 minus 0070 (18), no validation split.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from ssl_bench.core.data import Case, TaskSpec, validate_label
from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.datasets.common import (
    DatasetInfo,
    RealDataset,
    _ellipsis,
    load_nifti,
    minmax,
    natural_key,
    read_h5,
)

#: Duplicates of PANCREAS_0002 (TCIA); never used.
DUPLICATES = ("PANCREAS_0025", "PANCREAS_0070")
_CASE = re.compile(r"PANCREAS_(\d{4})$")
_LABEL = re.compile(r"label(\d{4})\.nii(\.gz)?$")

PANCREAS_INFO = dict(
    download="https://www.cancerimagingarchive.net/collection/pancreas-ct/ (DICOM via the NBIA Data Retriever and "
    "the .tcia manifest; labels: TCIA_pancreas_labels-02-05-2017.zip on the same page)",
    licence="CC BY 3.0 + TCIA citation policy (cite Roth et al. 2016 doi:10.7937/K9/TCIA.2016.tNB1kqBU, "
    "Roth et al. MICCAI 2015, Clark et al. 2013)",
    citation="Roth et al., Data from Pancreas-CT, TCIA 2016; Roth et al., DeepOrgan, MICCAI 2015",
)
RAW_LAYOUT = (
    "[manifest-*/]Pancreas-CT/PANCREAS_NNNN/<study>/<series>/*.dcm (older: DOI/PANCREAS_NNNN/...)\n"
    "TCIA_pancreas_labels-02-05-2017/labelNNNN.nii.gz (or Pancreas-CT-Label/, labels/, or the root itself)"
)


def case_id_of(number: str | int) -> str:
    return f"PANCREAS_{int(number):04d}"


# -- raw readers ----------------------------------------------------------------------------------------------


def read_dicom_series(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """HU volume ``(Z, rows, cols)`` float32 of the one axial series under ``folder``, slices in InstanceNumber order.

    Returns the volume and ``{"spacing": (sz, sy, sx), "instance_numbers": [...], "files": [...]}``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", "")),
        key=lambda p: natural_key(str(p)),
    )
    files = [p for p in files if p.suffix.lower() == ".dcm" or _is_dicom(p)]
    if not files:
        raise DataError(f"no DICOM files under {folder}")
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array
        except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}: not a readable DICOM image, truncated or corrupt ({type(exc).__name__}: {exc})"
            ) from exc
        slices.append((path, ds, pixels))
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds, _ in slices}
    if len(series) > 1:
        raise DataError(
            f"{folder}: {len(series)} DICOM series ({_ellipsis(sorted(series), 3)}); expected one CT series"
        )
    numbers = [getattr(ds, "InstanceNumber", None) for _, ds, _ in slices]
    if all(n is not None for n in numbers):
        keyed = sorted(zip((int(n) for n in numbers), range(len(slices))))
        seen: dict[int, Path] = {}
        for n, i in keyed:
            if n in seen:
                raise DataError(f"{slices[i][0]}: InstanceNumber {n} also used by {seen[n]}; cannot order the slices")
            seen[n] = slices[i][0]
        order = [i for _, i in keyed]
    else:
        try:
            z = [float(ds.ImagePositionPatient[2]) for _, ds, _ in slices]
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise DataError(f"{folder}: slices have neither InstanceNumber nor ImagePositionPatient") from exc
        order = list(np.argsort(z, kind="stable"))
    slices = [slices[i] for i in order]
    first_path, first, first_pixels = slices[0]
    orient = np.asarray(getattr(first, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=float)
    if orient.shape != (6,) or abs(abs(float(np.dot(np.cross(orient[:3], orient[3:]), [0, 0, 1]))) - 1) > 1e-3:
        raise DataError(
            f"{first_path}: ImageOrientationPatient {list(orient)} is not axial; expected an axial CT series"
        )
    volume = np.empty((len(slices), *first_pixels.shape), dtype=np.float32)
    for k, (path, ds, pixels) in enumerate(slices):
        if pixels.shape != first_pixels.shape:
            raise DataError(f"{path}: slice size {pixels.shape} differs from {first_path.name} {first_pixels.shape}")
        o = np.asarray(getattr(ds, "ImageOrientationPatient", orient), dtype=float)
        if not np.allclose(o, orient, atol=1e-3):
            raise DataError(f"{path}: ImageOrientationPatient {list(o)} differs from {first_path.name} {list(orient)}")
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        volume[k] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    sy, sx = (float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0]))
    sz = None
    try:
        zs = np.array([float(ds.ImagePositionPatient[2]) for _, ds, _ in slices])
        if len(zs) > 1 and np.all(np.isfinite(zs)):
            sz = float(np.median(np.abs(np.diff(zs)))) or None
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    if sz is None:
        sz = float(getattr(first, "SliceThickness", 1.0) or 1.0)
    info = {
        "spacing": (sz, sy, sx),
        "instance_numbers": [int(getattr(ds, "InstanceNumber", -1)) for _, ds, _ in slices],
        "files": [str(p) for p, _, _ in slices],
    }
    return volume, info


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_nih_label(path: Path, image_shape: Sequence[int], image_where: str) -> np.ndarray:
    """NIH label NIfTI aligned by index to the DICOM volume ``(Z, rows, cols)``: transpose (x, y, z) -> (z, y, x)."""
    data, _, _ = load_nifti(path)
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D label volume, got shape {data.shape}")
    label = np.transpose(data, (2, 1, 0))
    expected = tuple(int(s) for s in image_shape)
    if label.shape != expected:
        if np.transpose(data, (2, 0, 1)).shape == expected:
            raise DataError(
                f"{path}: label stored as (rows, cols, slices) {data.shape}; the NIH convention is "
                f"(cols, rows, slices) for the image {image_where} of (slices, rows, cols) {expected}: wrong "
                "orientation, not this dataset's label format"
            )
        raise DataError(
            f"{path}: label shape {data.shape} (NIH order cols x rows x slices) does not match the DICOM series "
            f"{image_where} (slices, rows, cols) = {expected}"
        )
    return validate_label(np.ascontiguousarray(label), 2, str(path))


def find_raw(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``({case id: DICOM patient folder}, {case id: label file})`` of a raw Pancreas-CT folder."""
    dicom: dict[str, Path] = {}
    for pattern in ("PANCREAS_*", "Pancreas-CT/PANCREAS_*", "*/Pancreas-CT/PANCREAS_*", "*/PANCREAS_*"):
        for d in sorted(root.glob(pattern)):
            m = _CASE.match(d.name)
            if d.is_dir() and m:
                dicom.setdefault(case_id_of(m.group(1)), d)
    labels: dict[str, Path] = {}
    for pattern in ("label*.nii*", "*/label*.nii*", "*/*/label*.nii*"):
        for f in sorted(root.glob(pattern)):
            m = _LABEL.match(f.name)
            if f.is_file() and m:
                labels.setdefault(case_id_of(m.group(1)), f)
    return dicom, labels


def crop_box_2d(shape_yx: Sequence[int], centre: Sequence[float], size: Sequence[int]) -> tuple[int, int]:
    """Top-left corner of a ``size`` window centred on ``centre`` and shifted inside an image of ``shape_yx``
    (0 where the image is smaller than the window)."""
    corner = []
    for n, c, s in zip(shape_yx, centre, size):
        start = int(np.floor(c - s / 2 + 0.5))
        corner.append(0 if n <= s else min(max(start, 0), n - s))
    return corner[0], corner[1]


def crop_2d(volume: np.ndarray, corner: tuple[int, int], size: Sequence[int]) -> np.ndarray:
    y0, x0 = corner
    out = volume[:, y0 : y0 + size[0], x0 : x0 + size[1]]
    if out.shape[1:] != tuple(size):
        out = np.pad(out, [(0, 0), (0, size[0] - out.shape[1]), (0, size[1] - out.shape[2])])
    return np.ascontiguousarray(out)


def bbox_crop_3d(label: np.ndarray, margin: int, min_size: int) -> tuple[slice, ...]:
    """CoraNet's crop: foreground bounding box + ``margin`` per side, grown (centred) to at least ``min_size``
    where the volume allows, clipped to the volume."""
    nz = np.nonzero(label)
    if not nz[0].size:
        raise DataError("the label is empty: the label-based crop is undefined")
    out = []
    for axis, n in enumerate(label.shape):
        lo = max(int(nz[axis].min()) - margin, 0)
        hi = min(int(nz[axis].max()) + 1 + margin, n)
        if hi - lo < min_size:
            grow = min_size - (hi - lo)
            lo = max(lo - grow // 2, 0)
            hi = min(lo + min_size, n)
            lo = max(hi - min_size, 0)
        out.append(slice(lo, hi))
    return tuple(out)


# -- adapters -------------------------------------------------------------------------------------------------


class _PancreasBase(RealDataset):
    """Shared raw-layout handling of both Pancreas-CT adapters."""

    excluded: ClassVar[tuple[str, ...]] = DUPLICATES

    def _find_raw(self) -> bool:
        assert self.root is not None
        self._dicom, self._labels = find_raw(self.root)
        return bool(self._dicom)

    def _raw_case_ids(self) -> list[str]:
        ids = set(self._dicom) | set(self._labels)
        return sorted((c for c in ids if c not in self.excluded), key=natural_key)

    def _read_raw(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Path, Path]:
        if case_id in self.excluded:
            raise DataError(f"{case_id} is a duplicate of PANCREAS_0002 (TCIA) and is not used")
        folder, label_path = self._dicom.get(case_id), self._labels.get(case_id)
        if folder is None:
            raise DataError(f"no DICOM folder {case_id} under {self.root} (expected {RAW_LAYOUT.splitlines()[0]})")
        if label_path is None:
            raise DataError(f"no label file label{case_id[-4:]}.nii.gz for {case_id} under {self.root}")
        hu, info = read_dicom_series(folder)
        label = read_nih_label(label_path, hu.shape, str(folder))
        return hu, label, info, folder, label_path

    def check_extra(self) -> tuple[list[str], list[str]]:
        notes, problems = super().check_extra()
        h5 = getattr(self, "_h5", {})
        dup_h5 = [c for c in self.excluded if c in h5]
        if self.store is None and dup_h5:
            notes.append(f"duplicates {', '.join(dup_h5)} present as HDF5 files: skipped, as intended")
        if self.store is None and self.layout == "raw":
            dup = [c for c in self.excluded if c in self._labels or c in self._dicom]
            if dup:
                notes.append(f"duplicates {', '.join(dup)} present (label and/or DICOM): skipped, as intended")
            no_label = sorted(set(self._dicom) - set(self._labels) - set(self.excluded), key=natural_key)
            if no_label:
                problems.append(f"DICOM folders without a label file: {_ellipsis(no_label)}")
            no_image = sorted(set(self._labels) - set(self._dicom) - set(self.excluded), key=natural_key)
            if no_image:
                problems.append(f"label files without a DICOM folder: {_ellipsis(no_image)}")
        return notes, problems


@DATASETS.register("pancreas-ct")
class PancreasCT(_PancreasBase):
    """NIH Pancreas-CT, 2D protocol (paper §IV-B): window [-100, 240], 192x240 crops, 80/20 split, 1:4/1:2/1:1."""

    name = "pancreas-ct"
    spec = TaskSpec(dims=2, num_classes=2, label_names=("background", "pancreas"), modality="CT")
    root_env = "SSL_BENCH_PANCREAS"
    split_name = "pancreas-ct"
    window: ClassVar[tuple[float, float]] = (-100.0, 240.0)
    crop_size: ClassVar[tuple[int, int]] = (192, 240)
    presets = {
        "cpu": {"dataset.image_size": (128, 160)},
        "paper": {"dataset.image_size": (192, 240)},
    }
    info = DatasetInfo(
        title="NIH Pancreas-CT (TCIA), 2D protocol of CoraNet (TMI 2021) §IV-B",
        short="Pancreas-CT",
        summary="82 contrast-enhanced abdominal CTs, pancreas labels; 80 used (0025/0070 are duplicates). HU window "
        "[-100, 240], min-max to [0, 1], slices cropped to 192x240 around the label's in-plane box centre (uses the "
        "label, for all cases). 64 train / 16 test patients; labelled:unlabelled 1:4 / 1:2 / 1:1 = --labeled 13 / 21 / "
        "32.",
        layout=RAW_LAYOUT,
        **PANCREAS_INFO,
    )

    def _open_raw(self) -> str:
        if not self._find_raw():
            raise DataError(self.missing(f"Pancreas-CT root {self.root} holds no PANCREAS_NNNN DICOM folders"))
        return "raw"

    def layout_params(self, layout: str) -> dict[str, Any]:
        return {
            "hu": "stored value * RescaleSlope + RescaleIntercept; slices by InstanceNumber",
            "label": "NIfTI (x, y, z) -> (z, y, x), index-aligned, affine ignored",
            "window": list(self.window),
            "normalise": "min-max per volume after clipping",
            "crop": {"size": list(self.crop_size), "placement": "centre of the label's in-plane bounding box"},
        }

    def _load_raw(self, case_id: str) -> Case:
        hu, label, info, folder, label_path = self._read_raw(case_id)
        image = minmax(np.clip(hu, *self.window))
        fg = np.nonzero(label.any(axis=0))
        if fg[0].size:
            centre = ((fg[0].min() + fg[0].max()) / 2 + 0.5, (fg[1].min() + fg[1].max()) / 2 + 0.5)
            placement = "label box centre"
        else:
            centre = (image.shape[1] / 2, image.shape[2] / 2)
            placement = "image centre (empty label)"
        corner = crop_box_2d(image.shape[1:], centre, self.crop_size)
        cropped_label = crop_2d(label, corner, self.crop_size)
        meta = {
            "crop_corner": list(corner),
            "crop_placement": placement,
            "label_voxels_outside_crop": int(label.sum()) - int(cropped_label.sum()),
            "instance_numbers": [info["instance_numbers"][0], info["instance_numbers"][-1]],
            "source": folder.name,
            "label_file": label_path.name,
        }
        return Case(case_id, crop_2d(image, corner, self.crop_size), cropped_label, info["spacing"], case_id, meta)


@DATASETS.register("pancreas-ct-3d")
class PancreasCT3D(_PancreasBase):
    """NIH Pancreas-CT, 3D protocol of the released CoraNet code (Table V): 12 labelled / 50 unlabelled / 18 test."""

    name = "pancreas-ct-3d"
    spec = TaskSpec(dims=3, num_classes=2, label_names=("background", "pancreas"), modality="CT")
    root_env = "SSL_BENCH_PANCREAS_3D"
    #: §IV-D / released code: V-Net, 96^3 crops, sliding window stride 16 x 16 x 4, 12 labelled volumes;
    #: unlabelled volumes as one centre crop each (released code), so CoraNet's offline pseudo-labels apply
    presets = {
        # koncle/CoraNet as released: its V-Net with InstanceNorm on 96^3 crops, one centre crop per unlabelled volume
        "released": {
            "model.backbone": "vnet",
            "model.norm": "instance",
            "dataset.labeled": 12,
            "dataset.unlabeled_views": "center",
        },
        "smoke": {
            "model.backbone": "vnet",
            "dataset.labeled": 12,
            "dataset.patch_size": (16, 32, 32),
            "eval.patch_size": (16, 32, 32),
            "eval.stride": (8, 16, 16),
            "dataset.unlabeled_views": "center",
            "trainer.batch_size": 2,
            "trainer.unlabeled_batch_size": 2,
        },
        "cpu": {
            "model.backbone": "vnet",
            "dataset.labeled": 12,
            "dataset.patch_size": (48, 64, 64),
            "eval.patch_size": (48, 64, 64),
            "eval.stride": (24, 32, 32),
            "dataset.unlabeled_views": "center",
            "trainer.batch_size": 2,
            "trainer.unlabeled_batch_size": 2,
        },
        "paper": {
            "model.backbone": "vnet",
            "dataset.labeled": 12,
            "dataset.patch_size": (96, 96, 96),
            "eval.patch_size": (96, 96, 96),
            "eval.stride": (4, 16, 16),
            "dataset.unlabeled_views": "center",
            "trainer.batch_size": 4,
            "trainer.unlabeled_batch_size": 4,
            "trainer.epochs": 200,
        },
    }
    split_name = "pancreas-ct-3d"
    window: ClassVar[tuple[float, float]] = (-125.0, 275.0)
    margin: ClassVar[int] = 25
    min_size: ClassVar[int] = 96
    info = DatasetInfo(
        title="NIH Pancreas-CT (TCIA), 3D protocol of the released CoraNet code (Table V)",
        short="Pancreas-CT",
        summary="Reference preprocessing: in-plane spacing used for all axes ('1 mm'), HU [-125, 275], min-max, "
        "crop to the label bounding box + 25 voxels (min 96 per axis) - this crop uses the label for every case, as "
        "the reference does. Lists: 12 labelled (0001-0012), 50 unlabelled, 18 test. Also reads the CoraNet "
        "(NNNN.h5) and MC-Net (imageNNNN_norm.h5) preprocessed HDF5 copies.",
        layout=RAW_LAYOUT
        + "\nor preprocessed HDF5: [data/]NNNN.h5 (CoraNet) or [Pancreas_h5/]imageNNNN_norm.h5 (MC-Net), "
        "datasets 'image' and 'label' in (x, y, z) order",
        **PANCREAS_INFO,
    )

    def _open_raw(self) -> str:
        assert self.root is not None
        self._h5: dict[str, Path] = {}
        for layout, folders, pattern in (
            ("coranet-h5", ("", "data"), re.compile(r"(?:data)?(\d{4})\.h5$")),
            ("mcnet-h5", ("", "Pancreas_h5"), re.compile(r"image(\d{4})_norm\.h5$")),
        ):
            for sub in folders:
                folder = self.root / sub if sub else self.root
                if folder.is_dir():
                    for f in sorted(folder.glob("*.h5")):
                        m = pattern.match(f.name)
                        if m:
                            self._h5.setdefault(case_id_of(m.group(1)), f)
            if self._h5:
                self._dicom, self._labels = {}, {}
                if layout == "coranet-h5":
                    self.spacing_unit = "voxel"
                return layout
        if not self._find_raw():
            raise DataError(
                self.missing(
                    f"Pancreas-CT root {self.root} holds no PANCREAS_NNNN DICOM folders and no NNNN.h5 / "
                    "imageNNNN_norm.h5 files"
                )
            )
        return "raw"

    def layout_params(self, layout: str) -> dict[str, Any]:
        if layout == "raw":
            return {
                "hu": "stored value * RescaleSlope + RescaleIntercept; slices by InstanceNumber",
                "label": "NIfTI (x, y, z) -> (z, y, x), index-aligned, affine ignored",
                "resample": "zoom by the in-plane spacing on all axes (CoraNet quirk); order 1 image, 0 label",
                "window": list(self.window),
                "normalise": "min-max per volume after clipping",
                "crop": {"margin": self.margin, "min_size": self.min_size, "uses_label": True},
            }
        return {"axes": "(x, y, z) -> (z, y, x)", "intensity": "as stored"}

    def _raw_case_ids(self) -> list[str]:
        if self.layout in ("coranet-h5", "mcnet-h5"):
            return sorted((c for c in self._h5 if c not in self.excluded), key=natural_key)
        return super()._raw_case_ids()

    def _load_raw(self, case_id: str) -> Case:
        if self.layout in ("coranet-h5", "mcnet-h5"):
            return self._load_h5(case_id)
        hu, label, info, folder, label_path = self._read_raw(case_id)
        sz, sy, sx = info["spacing"]
        factor = sx  # CoraNet: the in-plane spacing stands in for all three axes, target 1 mm
        image = ndimage.zoom(hu, factor, order=1, mode="nearest")
        zlabel = ndimage.zoom(label, factor, order=0, mode="nearest")
        spacing = tuple(float(n * s / m) for n, s, m in zip(hu.shape, (sz, sy, sx), image.shape))
        image = minmax(np.clip(image, *self.window))
        try:
            box = bbox_crop_3d(zlabel, self.margin, self.min_size)
        except DataError as exc:
            raise DataError(f"{label_path}: {exc}") from exc
        meta = {
            "crop": [[s.start, s.stop] for s in box],
            "resampled_shape": list(image.shape),
            "zoom": factor,
            "source": folder.name,
            "label_file": label_path.name,
        }
        return Case(
            case_id,
            np.ascontiguousarray(image[box]),
            np.ascontiguousarray(zlabel[box]),
            spacing,
            case_id,
            meta,
        )

    def _load_h5(self, case_id: str) -> Case:
        path = self._h5.get(case_id)
        if path is None:
            raise DataError(f"no HDF5 file for {case_id} under {self.root} ({self.layout} layout)")
        image, label = read_h5(path)
        if image.ndim != 3 or image.shape != label.shape:
            raise DataError(f"{path}: expected 3D image and label of equal shape, got {image.shape} and {label.shape}")
        label = validate_label(label, 2, str(path))
        spacing = (1.0, 1.0, 1.0) if self.layout == "mcnet-h5" else None
        return Case(
            case_id,
            np.ascontiguousarray(np.transpose(image, (2, 1, 0)).astype(np.float32)),
            np.ascontiguousarray(np.transpose(label, (2, 1, 0))),
            spacing,
            case_id,
            {"file": path.name, "layout": self.layout},
        )
