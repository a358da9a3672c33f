"""ACDC (MICCAI 2017 Automated Cardiac Diagnosis Challenge): official NIfTI layout, SSL4MIS HDF5 layout, or a
folder written by ``ssl-bench data prepare acdc``; the layout is detected from the folder.

Bernard et al., "Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures Segmentation and Diagnosis:
Is the Problem Solved?", IEEE TMI 37(11), 2018. Labels: 0 background, 1 RV cavity, 2 myocardium, 3 LV cavity.

**SSL4MIS HDF5 layout** (Luo et al., github.com/HiLab-git/SSL4MIS, data/ACDC)::

    <root>/train.list  val.list  test.list      volume ids (patientNNN_frameMM), 70/10/20 patients
    <root>/train_slices.list                    training slice ids (<volume>_slice_<k>)
    <root>/data/slices/<slice id>.h5            'image' (H, W) float32 in [0, 1], 'label' (H, W) uint8
    <root>/data/<volume id>.h5                  'image' (Z, H, W), 'label' (Z, H, W) (val/test volumes)

Some copies keep the slice files directly in ``data/``; both are accepted. Splits are the folder's ``*.list`` files
(equal to ``datasets/splits/acdc.json``); training volumes, which SSL4MIS does not ship, are stacked from their
slice files in slice-index order. No voxel spacing is stored, so distances are in voxels (as the CoraNet paper
reports HD). Frames are named frame01 (ED) and frame02 (ES).

**Official layout** (HumanHeart / CREATIS zip; older copies lack ``database/``)::

    <root>/[database/]training/patient001/Info.cfg                   "ED: 1", "ES: 12", "Group: DCM", ...
    <root>/[database/]training/patient001/patient001_frame01.nii.gz  (+ _gt.nii.gz); ES frame likewise
    <root>/[database/]testing/patient101/...                         same files (not used by the protocols)

Volumes are transposed from nibabel's (x, y, z) to (z, y, x) (the SSL4MIS / SimpleITK order), min-max normalised per
volume to [0, 1] as SSL4MIS does, and carry their spacing ``(sz, sy, sx)`` from the NIfTI header. The two annotated
frames (ED and ES from Info.cfg) get SSL4MIS's case ids: frame01 = the lower frame number (ED), frame02 = the higher
(ES); the original frame number and phase are in ``Case.meta``. An image whose ground truth has another shape or
another orientation (axis codes or voxel sizes of the NIfTI headers) is an error naming the file. Splits are
``datasets/splits/acdc.json`` (training patients 001-100 only).

**Protocols** (``dataset.selection``): ``first`` = ``ssl4mis``: 70/10/20 patients, the labelled patients are the
first N of train.list, i.e. 7 patients = the first 136 rows of train_slices.list and 14 = the first 256, exactly as
SSL4MIS; ``random`` = ``dct``: the same split, labelled patients drawn per seed at the patient level (seeds 0-2 are
pinned in the split file; CoraNet Table IX: 20 % = 14 patients, 3 seeds). ED and ES of a patient are always in the
same split and the same labelled/unlabelled side.

Deviations from SSL4MIS: slices are resized to the training size with bilinear interpolation for images and
nearest for labels (SSL4MIS uses nearest, order 0, for both). The DCT-Seg code held out 25 frame *volumes* for
validation; ``dct`` here keeps the patient-level 70/10/20 split so that ED and ES never straddle splits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.core.data import Case, DatasetAdapter, SliceSet, TaskSpec, validate_image, validate_label
from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.datasets.common import (
    CaseSummary,
    DatasetInfo,
    RealDataset,
    _ellipsis,
    load_nifti,
    minmax,
    natural_key,
    read_h5,
    read_list,
    sha256_file,
)

__all__ = ["ACDC", "SPLIT_FILES", "read_h5", "read_list", "parse_info_cfg"]

SPLIT_FILES = {"train": "train.list", "val": "val.list", "test": "test.list"}
_PATIENT = re.compile(r"patient\d{3}$")


def parse_info_cfg(path: Path) -> dict[str, str]:
    """``Key: value`` lines of an ACDC ``Info.cfg``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"missing or unreadable {path}: {exc}") from exc
    out = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def _frame_number(info: dict[str, str], key: str, path: Path) -> int:
    try:
        return int(float(info[key]))
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: no valid '{key}: <frame>' line (found {sorted(info)})") from exc


@DATASETS.register("acdc")
class ACDC(RealDataset):
    """ACDC cine-MR, 4 classes (RV, Myo, LV): official NIfTI or SSL4MIS HDF5 layout; 70/10/20 patients."""

    name = "acdc"
    spec = TaskSpec(dims=2, num_classes=4, label_names=("background", "RV", "Myo", "LV"), modality="MR")
    root_env = "SSL_BENCH_ACDC"
    spacing_unit = "voxel"
    split_name = "acdc"
    #: cpu: 128x128 slices, the paper's batch of 4 + 4, 25 epochs x 40 steps (1000 steps; ~5 min for the U-Net on
    #: 2 idle cores) — a reduced protocol far below the paper's 256x256 GPU training; paper: 256x256 (SSL4MIS)
    presets = {
        "cpu": {
            "dataset.image_size": (128, 128),
            "trainer.batch_size": 4,
            "trainer.unlabeled_batch_size": 4,
            "trainer.epochs": 25,
            "trainer.iters_per_epoch": 40,
            "trainer.val_every": 5,
        },
        "paper": {"dataset.image_size": (256, 256)},
        # SSL4MIS's ACDC runs: 7 labelled patients (the first 136 slices of train_slices.list)
        "ssl4mis": {"dataset.labeled": 7},
        "cpu-bench": {"dataset.labeled": 7},
    }
    info = DatasetInfo(
        title="ACDC (Automated Cardiac Diagnosis Challenge, MICCAI 2017), cine-MR short axis",
        short="ACDC",
        summary="150 patients (100 training + 50 testing), ED and ES frames annotated: RV cavity, myocardium, "
        "LV cavity. Protocols: ssl4mis (70/10/20 training patients; 7 or 14 labelled = first 136 / 256 rows of "
        "train_slices.list) and dct (20 % labelled patients, seeded, 3 seeds; CoraNet Table IX). 2D training on "
        "slices resized to 256x256 (paper preset).",
        download="https://www.creatis.insa-lyon.fr/Challenge/acdc/ (official NIfTI; HumanHeart database). "
        "SSL4MIS HDF5 copy: https://github.com/HiLab-git/SSL4MIS (data/ACDC/README.md)",
        licence="ACDC terms: research use with mandatory citation (current distribution CC BY-NC-SA 4.0); "
        "never redistribute it",
        citation="Bernard et al., IEEE TMI 37(11):2514-2525, 2018",
        layout="official: [database/]training/patientNNN/Info.cfg (ED/ES frame numbers), testing/ likewise\n"
        "          [database/]training/patientNNN/patientNNN_frameXX.nii.gz + patientNNN_frameXX_gt.nii.gz\n"
        "SSL4MIS:  train.list, val.list, test.list, train_slices.list\n"
        "          data/slices/<volume>_slice_<k>.h5 (or directly in data/), data/<volume>.h5 (val/test)",
    )

    # -- layout detection -----------------------------------------------------------------------------------------

    def _open_raw(self) -> str:
        root = self.root
        assert root is not None
        self._patient_dirs = self._find_patient_dirs(root)
        if self._patient_dirs:
            self.spacing_unit = "mm"
            return "official"
        missing = [f for f in (*SPLIT_FILES.values(), "train_slices.list") if not (root / f).is_file()]
        if missing or not (root / "data").is_dir():
            raise DataError(
                self.missing(
                    f"ACDC root {root} does not look like the SSL4MIS ACDC layout: missing {missing or ['data/']} "
                    "(expected train.list, val.list, test.list, train_slices.list and data/), nor like the official "
                    "layout (no [database/]training/patientNNN/ folders)"
                )
            )
        self._lists = {split: read_list(root / name) for split, name in SPLIT_FILES.items()}
        for split in ("train", "test"):
            if not self._lists[split]:
                raise DataError(f"split list {root / SPLIT_FILES[split]} is empty")
        self._slice_dir = root / "data" / "slices"
        if not self._slice_dir.is_dir():
            if not any(root.joinpath("data").glob("*_slice_*.h5")):
                raise DataError(
                    self.missing(
                        f"ACDC root {root}: training slice folder {self._slice_dir} is missing (and data/ holds no "
                        "*_slice_*.h5 files either)"
                    )
                )
            self._slice_dir = root / "data"
        self._slice_index: dict[str, list[str]] | None = None
        return "ssl4mis"

    @staticmethod
    def _find_patient_dirs(root: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for base in (root, root / "database"):
            for sub in (base / "training", base / "testing", base):
                if sub.is_dir():
                    for d in sub.iterdir():
                        if d.is_dir() and _PATIENT.match(d.name):
                            found.setdefault(d.name, d)
        return dict(sorted(found.items()))

    def layout_params(self, layout: str) -> dict[str, Any]:
        if layout == "official":
            return {
                "axes": "nibabel (x, y, z) -> (z, y, x)",
                "intensity": "min-max per volume to [0, 1], float32",
                "frames": "ED and ES from Info.cfg, sorted by frame number -> frame01, frame02",
                "spacing": "NIfTI header (sz, sy, sx)",
            }
        return {
            "axes": "(z, y, x) as stored",
            "intensity": "as stored (SSL4MIS: min-max per volume)",
            "train_volumes": "stacked from data/slices in slice-index order",
            "spacing": None,
        }

    # -- splits ---------------------------------------------------------------------------------------------------

    def splits(self) -> dict[str, list[str]]:
        if self.layout == "ssl4mis" and self.store is None:
            return {k: list(v) for k, v in self._lists.items()}
        return super().splits()

    def patients(self, split: str) -> list[str]:
        if self.layout == "ssl4mis" and self.store is None:
            return DatasetAdapter.patients(self, split)
        return super().patients(split)

    def cases_of(self, patient: str) -> list[str]:
        return [f"{patient}_frame01", f"{patient}_frame02"]

    def group(self, case_id: str) -> str:
        match = re.match(r"(patient\d+)", case_id)
        return match.group(1) if match else case_id

    def split_info(self, selection: str = "first") -> dict[str, Any]:
        info = super().split_info(selection)
        if self.layout == "ssl4mis" and self.store is None:
            root = self.root
            assert root is not None
            lists = {name: sha256_file(root / name) for name in (*SPLIT_FILES.values(), "train_slices.list")}
            same = all(DatasetAdapter.patients(self, s) == self.split_file.split[s] for s in ("train", "val", "test"))
            info.update(source_lists=lists, lists_match_split_file=same)
        return info

    # -- raw loading ----------------------------------------------------------------------------------------------

    def _raw_case_ids(self) -> list[str]:
        if self.layout == "official":
            return [c for p in self._patient_dirs for c in self.cases_of(p)]
        ids = [c for v in self._lists.values() for c in v]
        data = self.root / "data"  # type: ignore[operator]
        extra = [p.stem for p in data.glob("patient*_frame*.h5") if "_slice_" not in p.stem]
        return list(dict.fromkeys(ids + sorted(extra, key=natural_key)))

    def _load_raw(self, case_id: str) -> Case:
        if self.layout == "official":
            return self._load_official(case_id)
        return self._load_ssl4mis(case_id)

    def _frames(self, patient: str) -> tuple[Path, dict[str, str], list[tuple[int, str]]]:
        pdir = self._patient_dirs.get(patient)
        if pdir is None:
            raise DataError(
                f"patient folder {patient} not found under {self.root} (looked in [database/]training/ and testing/)"
            )
        cfg_path = pdir / "Info.cfg"
        info = parse_info_cfg(cfg_path)
        ed, es = _frame_number(info, "ED", cfg_path), _frame_number(info, "ES", cfg_path)
        if ed == es:
            raise DataError(f"{cfg_path}: ED and ES are the same frame ({ed})")
        return pdir, info, sorted([(ed, "ED"), (es, "ES")])

    def _load_official(self, case_id: str) -> Case:
        match = re.fullmatch(r"(patient\d{3})_frame(0[12])", case_id)
        if not match:
            raise DataError(f"ACDC case id {case_id!r} must be patientNNN_frame01 (ED) or patientNNN_frame02 (ES)")
        patient, which = match.group(1), int(match.group(2))
        pdir, info, frames = self._frames(patient)
        frame, phase = frames[which - 1]
        stem = f"{patient}_frame{frame:02d}"
        img_path, gt_path = self._nii(pdir, stem), self._nii(pdir, f"{stem}_gt")
        image, zooms, affine = load_nifti(img_path)
        label, gt_zooms, gt_affine = load_nifti(gt_path)
        if image.ndim == 4 and image.shape[3] == 1:
            image = image[..., 0]
        if image.ndim != 3:
            raise DataError(f"{img_path}: expected a 3D frame volume (x, y, z), got shape {image.shape}")
        if label.shape != image.shape:
            raise DataError(f"{gt_path}: label shape {label.shape} differs from image {img_path.name} {image.shape}")
        self._check_orientation(img_path, affine, zooms, gt_path, gt_affine, gt_zooms)
        label = validate_label(label, self.spec.num_classes, str(gt_path))
        validate_image(image, str(img_path))
        spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
        meta = {"frame": frame, "phase": phase, "file": img_path.name, "group": info.get("Group"), "layout": "official"}
        return Case(
            case_id,
            minmax(np.transpose(image, (2, 1, 0))),
            np.ascontiguousarray(np.transpose(label, (2, 1, 0))),
            spacing,
            patient,
            meta,
        )

    @staticmethod
    def _nii(pdir: Path, stem: str) -> Path:
        for suffix in (".nii.gz", ".nii"):
            if (pdir / f"{stem}{suffix}").is_file():
                return pdir / f"{stem}{suffix}"
        raise DataError(f"missing frame file {pdir / (stem + '.nii.gz')} (named by Info.cfg ED/ES)")

    @staticmethod
    def _check_orientation(
        img_path: Path, affine: np.ndarray, zooms: Sequence[float], gt_path: Path, gt_affine: np.ndarray, gt_zooms
    ) -> None:
        import nibabel as nib

        codes, gt_codes = nib.aff2axcodes(affine), nib.aff2axcodes(gt_affine)
        if codes != gt_codes:
            raise DataError(
                f"{gt_path}: orientation {''.join(gt_codes)} differs from its image {img_path.name} "
                f"({''.join(codes)}): the label would be misaligned"
            )
        if not np.allclose(zooms[:3], gt_zooms[:3], rtol=1e-3, atol=1e-4):
            raise DataError(
                f"{gt_path}: voxel size {tuple(gt_zooms[:3])} differs from its image {img_path.name} {tuple(zooms[:3])}"
            )

    def _slices_of(self, volume: str) -> list[str]:
        if self._slice_index is None:
            index: dict[str, list[str]] = {}
            for sid in read_list(self.root / "train_slices.list"):  # type: ignore[operator]
                index.setdefault(sid.rsplit("_slice_", 1)[0], []).append(sid)
            self._slice_index = index
        return self._slice_index.get(volume, [])

    def _load_ssl4mis(self, case_id: str) -> Case:
        path = self.root / "data" / f"{case_id}.h5"  # type: ignore[operator]
        if not path.is_file():
            slice_ids = self._slices_of(case_id)
            if slice_ids:
                return self._stack_slices(case_id, slice_ids)
            if any(case_id in v for v in self._lists.values()):
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
        validate_image(image, str(path))
        return Case(
            case_id, image.astype(np.float32, copy=False), label, None, self.group(case_id), {"file": path.name}
        )

    def _stack_slices(self, case_id: str, slice_ids: list[str]) -> Case:
        by_index = sorted(slice_ids, key=lambda s: int(s.rsplit("_slice_", 1)[1]))
        ks = [int(s.rsplit("_slice_", 1)[1]) for s in by_index]
        if ks != list(range(ks[0], ks[0] + len(ks))) or ks[0] not in (0, 1):
            raise DataError(f"train_slices.list: slices of {case_id} are not consecutive from 0 or 1 (found {ks})")
        sset = self._read_slices(by_index)
        shapes = {im.shape for im in sset.images}
        if len(shapes) != 1:
            raise DataError(f"slices of {case_id} in {self._slice_dir} differ in shape: {sorted(shapes)}")
        image = np.stack([im[0] for im in sset.images])
        label = np.stack(sset.labels)
        return Case(case_id, image, label, None, self.group(case_id), {"stacked_from_slices": len(ks)})

    def _read_slices(self, ids: Sequence[str]) -> SliceSet:
        images, labels, owners = [], [], []
        for sid in ids:
            path = self._slice_dir / f"{sid}.h5"
            image, label = read_h5(path)
            if image.ndim != 2 or image.shape != label.shape:
                raise DataError(
                    f"{path}: expected 2D image and label of equal shape, got {image.shape} and {label.shape}"
                )
            images.append(validate_image(image, str(path)).astype(np.float32, copy=False)[None])
            labels.append(validate_label(label, self.spec.num_classes, str(path)))
            owners.append(sid.rsplit("_slice_", 1)[0])
        return SliceSet(images, labels, owners)

    def training_slices(self, case_ids: Sequence[str]) -> SliceSet:
        if self.layout != "ssl4mis" or self.store is not None:
            return super().training_slices(case_ids)
        wanted = set(case_ids)
        ids = [s for s in read_list(self.root / "train_slices.list") if s.rsplit("_slice_", 1)[0] in wanted]  # type: ignore[operator]
        if not ids:
            raise DataError(f"no training slices in train_slices.list for volumes {sorted(wanted)[:4]}...")
        absent = sorted(wanted - {s.rsplit("_slice_", 1)[0] for s in ids}, key=natural_key)
        if absent:  # a patient of train.list this copy lacks would silently shrink the labelled budget
            raise DataError(
                f"{self.root / 'train.list'} names {len(absent)} volume(s) with no slices in train_slices.list "
                f"({', '.join(absent[:4])}{' ...' if len(absent) > 4 else ''}): the patient is missing from this "
                "copy; fix the list or the data"
            )
        return self._read_slices(ids)

    # -- check ----------------------------------------------------------------------------------------------------

    def check_case(self, case_id: str, split: str) -> CaseSummary:
        if self.layout == "ssl4mis" and self.store is None and self._slices_of(case_id):
            sset = self._read_slices(self._slices_of(case_id))
            shapes = sorted({im.shape[1:] for im in sset.images})
            labels = {int(v) for lab in sset.labels for v in np.unique(lab)}
            lo = min(float(im.min()) for im in sset.images)
            hi = max(float(im.max()) for im in sset.images)
            return CaseSummary(case_id, len(sset), shapes, len(sset), labels, None, (lo, hi), files=len(sset))
        return super().check_case(case_id, split)

    def check_extra(self) -> tuple[list[str], list[str]]:
        notes, problems = super().check_extra()
        if self.layout == "ssl4mis" and self.store is None:
            root = self.root
            assert root is not None
            notes.append(
                "SSL4MIS ships no training volumes: training cases were checked through their slice files "
                f"({len(read_list(root / 'train_slices.list'))} rows in train_slices.list)"
            )
            listed = set(read_list(root / "train_slices.list"))
            if (root / "all_slices.list").is_file():
                listed |= set(read_list(root / "all_slices.list"))
            on_disk = {p.stem for p in self._slice_dir.glob("*_slice_*.h5")}
            stray = sorted(on_disk - listed, key=natural_key)
            if stray:
                notes.append(f"{len(stray)} slice files are in no list (not used): {_ellipsis(stray)}")
            info = self.split_info()
            if not info["lists_match_split_file"]:
                notes.append("the *.list files differ from datasets/splits/acdc.json: this copy uses its own lists")
        elif self.layout == "official" and self.store is None:
            testing = [p for p, d in self._patient_dirs.items() if d.parent.name == "testing"]
            if testing:
                notes.append(f"{len(testing)} testing/ patients are present (not used by the ssl4mis/dct protocols)")
        return notes, problems
