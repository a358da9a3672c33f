"""York cardiac MRI (``york-endocardium``): LV endocardium (cavity) segmentation, CoraNet's "MR endocardium" task.

Andreopoulos and Tsotsos, "Efficient and generalizable statistical models of shape and appearance for analysis of
cardiac MRI", Medical Image Analysis 12(3):335-357, 2008. 33 patients (children, SickKids Toronto), 20 frames per
cardiac cycle, 8-15 short-axis slices of 256 x 256; 7,980 images, of which about 5,011 carry manual contours.

**Layout** (as distributed at http://www.cse.yorku.ca/~mridataset/; pre-v7.3 MATLAB files)::

    <root>/sol_yxzt_patN.mat              variable sol_yxzt, (256, 256, Z, 20): (row y, column x, slice z, frame t)
    <root>/manual_seg_32points_patN.mat   variable manual_seg_32points, cell array {Z, 20}; each cell is a 65 x 2
                                          array of (x, y) points in 1-based MATLAB pixel coordinates (rows 1-32
                                          endocardium, row 33 a [0 0] separator, rows 34-65 epicardium) or the
                                          scalar -99999 (no contour: LV not visible)

(the files may also sit in one sub-folder of the root). Files are sorted naturally (pat1, pat2, ..., pat10).

**Cases**: one case per patient and frame, ``patN_tTT`` (TT = 1-based frame), holding only the slices of that frame
that have a contour (``Case.meta["slices"]`` lists their 1-based indices); frames without any contour are not
cases. Only frames with a contour are labelled, so images whose cell is -99999 are never used (neither labelled
nor unlabelled). Image: the frame's whole stack min-max normalised to [0, 1]; label: 1 inside the endocardial
polygon (the LV cavity), 0 elsewhere. Rasterisation: the 32 endocardial points (x, y) become vertices
(col = x - 1, row = y - 1) of a closed polygon and a pixel is inside if its centre is (even-odd rule) - the
reference viewer draws a spline through the points, which differs by about one pixel at the border. No spacing is
stored in the files (in-plane 0.9-1.6 mm, slices 6-13 mm apart), so distances are in voxels, as the paper reports HD.

**Split** (``datasets/splits/york.json``; CoraNet publishes none): patient level, 26 train / 7 test (seeded), no
validation split; labelled:unlabelled 1:4 (Table VII) = ``--labeled 5`` (5:21 patients), protocol ``paper``;
``selection=random`` draws per seed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.core.data import Case, TaskSpec
from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.datasets.common import DatasetInfo, RealDataset, _ellipsis, minmax, natural_key

NO_CONTOUR = -99999
N_POINTS = 32
_SOL = re.compile(r"sol_yxzt_pat(\d+)\.mat$")
_SEG = re.compile(r"manual_seg_32points_pat(\d+)\.mat$")


def polygon_mask(cols: np.ndarray, rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside the closed polygon with vertices ``(cols[i], rows[i])`` (0-based pixel
    coordinates), by the even-odd rule. Returns a bool ``shape`` mask."""
    mask = np.zeros(shape, dtype=bool)
    r0, r1 = max(int(np.floor(rows.min())), 0), min(int(np.ceil(rows.max())) + 1, shape[0])
    c0, c1 = max(int(np.floor(cols.min())), 0), min(int(np.ceil(cols.max())) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return mask
    py, px = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    inside = np.zeros(py.shape, dtype=bool)
    xj, yj = cols[-1], rows[-1]
    for xi, yi in zip(cols, rows):
        if yi != yj:
            crosses = (yi > py) != (yj > py)
            x_cross = xi + (py - yi) * (xj - xi) / (yj - yi)
            inside ^= crosses & (px < x_cross)
        xj, yj = xi, yi
    mask[r0:r1, c0:c1] = inside
    return mask


def _loadmat(path: Path, variable: str) -> Any:
    from scipy.io import loadmat

    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        data = loadmat(str(path), variable_names=[variable], squeeze_me=False)
    except NotImplementedError as exc:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) file; expected the distributed pre-v7.3 format") from exc
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a bad file
        raise DataError(
            f"{path}: not a readable MATLAB file, truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    if variable not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise DataError(f"{path}: no variable {variable!r} (found {found})")
    return data[variable]


def read_contours(path: Path) -> list[list[np.ndarray | None]]:
    """``[z][t]`` -> the (65, 2) point array, or None where the cell is -99999."""
    cells = _loadmat(path, "manual_seg_32points")
    if cells.dtype != object or cells.ndim != 2:
        raise DataError(f"{path}: manual_seg_32points must be a cell array {{Z, 20}}, got {cells.dtype} {cells.shape}")
    out: list[list[np.ndarray | None]] = []
    for z in range(cells.shape[0]):
        row: list[np.ndarray | None] = []
        for t in range(cells.shape[1]):
            try:
                pts = np.asarray(cells[z, t], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path}: cell ({z + 1}, {t + 1}) is not numeric") from exc
            if pts.size == 0 or pts.flat[0] == NO_CONTOUR:
                row.append(None)
                continue
            if pts.shape != (2 * N_POINTS + 1, 2) or not np.all(np.isfinite(pts)):
                raise DataError(
                    f"{path}: cell ({z + 1}, {t + 1}) has shape {pts.shape}; expected 65 x 2 finite (x, y) points "
                    f"or {NO_CONTOUR}"
                )
            row.append(pts)
        out.append(row)
    return out


def endocardium_mask(points: np.ndarray, shape: tuple[int, int], where: str) -> np.ndarray:
    """LV-cavity mask of one (65, 2) contour array (rows 1-32 = endocardium, 1-based (x, y))."""
    endo = points[:N_POINTS]
    cols, rows = endo[:, 0] - 1.0, endo[:, 1] - 1.0
    if cols.min() < -0.5 or rows.min() < -0.5 or cols.max() > shape[1] - 0.5 or rows.max() > shape[0] - 0.5:
        raise DataError(
            f"{where}: endocardial contour outside the {shape[0]}x{shape[1]} image (x {endo[:, 0].min():.1f}.."
            f"{endo[:, 0].max():.1f}, y {endo[:, 1].min():.1f}..{endo[:, 1].max():.1f}, 1-based)"
        )
    return polygon_mask(cols, rows, shape)


@DATASETS.register("york-endocardium")
class YorkEndocardium(RealDataset):
    """York cardiac MRI (.mat contours): LV endocardium, 2D; contoured frames only; 26/7 patients, 1:4 labelled."""

    name = "york-endocardium"
    spec = TaskSpec(dims=2, num_classes=2, label_names=("background", "LV cavity"), modality="MR")
    root_env = "SSL_BENCH_YORK"
    spacing_unit = "voxel"
    split_name = "york"
    presets = {
        "cpu": {"dataset.image_size": (128, 128)},
        "paper": {"dataset.image_size": (256, 256)},
    }
    info = DatasetInfo(
        title="York cardiac MRI (Andreopoulos & Tsotsos 2008), LV endocardium (CoraNet 'MR endocardium')",
        short="York MRI",
        summary="33 patients x 20 frames x 8-15 slices of 256x256 (7,980 images, ~5,011 with manual contours). "
        "Cases = patient x frame, contoured slices only; label = the endocardial polygon (LV cavity). "
        "26 train / 7 test patients; 1:4 labelled:unlabelled (Table VII) = --labeled 5.",
        download="http://www.cse.yorku.ca/~mridataset/ (images sol_yxzt_patN.mat and contours "
        "manual_seg_32points_patN.mat)",
        licence="free of charge for research purposes, cite the paper, no warranties; no redistribution grant "
        "(do not ship it)",
        citation="Andreopoulos & Tsotsos, Medical Image Analysis 12(3):335-357, 2008",
        layout="sol_yxzt_patN.mat (variable sol_yxzt, 256 x 256 x Z x 20)\n"
        "manual_seg_32points_patN.mat (variable manual_seg_32points, cell {Z, 20}: 65 x 2 (x, y) points or -99999)\n"
        "N = 1..33, in the root or one sub-folder",
    )

    def _open_raw(self) -> str:
        assert self.root is not None
        self._sol: dict[str, Path] = {}
        self._seg: dict[str, Path] = {}
        for folder in [self.root, *sorted(p for p in self.root.iterdir() if p.is_dir())]:
            for f in folder.glob("*.mat"):
                for regex, table in ((_SOL, self._sol), (_SEG, self._seg)):
                    m = regex.match(f.name)
                    if m:
                        table.setdefault(f"pat{int(m.group(1))}", f)
            if self._sol or self._seg:
                break
        if not self._sol and not self._seg:
            raise DataError(
                self.missing(f"York root {self.root} holds no sol_yxzt_patN.mat / manual_seg_32points_patN.mat")
            )
        self._contours: dict[str, list[list[np.ndarray | None]]] = {}
        self._volume: tuple[str, np.ndarray] | None = None
        return "mat"

    def layout_params(self, layout: str) -> dict[str, Any]:
        return {
            "axes": "sol_yxzt[:, :, :, t] (y, x, z) -> (z, y, x)",
            "intensity": "min-max per frame stack to [0, 1]",
            "slices": "only slices with a contour (cell != -99999)",
            "label": "endocardial polygon (rows 1-32), pixel centres, even-odd rule, (col, row) = (x - 1, y - 1)",
        }

    # -- index ----------------------------------------------------------------------------------------------------

    def _patients_raw(self) -> list[str]:
        return sorted(set(self._sol) | set(self._seg), key=natural_key)

    def _contours_of(self, patient: str) -> list[list[np.ndarray | None]]:
        if patient not in self._contours:
            path = self._seg.get(patient)
            if path is None:
                raise DataError(f"missing contour file manual_seg_32points_{patient}.mat under {self.root}")
            self._contours[patient] = read_contours(path)
        return self._contours[patient]

    def cases_of(self, patient: str) -> list[str]:
        if self.store is not None:
            return sorted((c for c, e in self.store.cases.items() if e.get("group") == patient), key=natural_key)
        contours = self._contours_of(patient)
        n_frames = len(contours[0]) if contours else 0
        return [f"{patient}_t{t + 1:02d}" for t in range(n_frames) if any(row[t] is not None for row in contours)]

    def group(self, case_id: str) -> str:
        return case_id.rsplit("_t", 1)[0]

    def _raw_case_ids(self) -> list[str]:
        """Cases of every patient whose contour file reads (the others are reported by ``check`` / ``splits``)."""
        out = []
        for patient in self._patients_raw():
            try:
                out += self.cases_of(patient)
            except DataError:
                continue
        return out

    # -- loading --------------------------------------------------------------------------------------------------

    def _images_of(self, patient: str) -> np.ndarray:
        if self._volume is not None and self._volume[0] == patient:
            return self._volume[1]
        path = self._sol.get(patient)
        if path is None:
            raise DataError(f"missing image file sol_yxzt_{patient}.mat under {self.root}")
        sol = _loadmat(path, "sol_yxzt")
        if sol.ndim != 4 or sol.dtype.kind not in "iuf":
            raise DataError(f"{path}: sol_yxzt must be a numeric (y, x, z, t) array, got {sol.dtype} {sol.shape}")
        contours = self._contours_of(patient)
        if (len(contours), len(contours[0]) if contours else 0) != sol.shape[2:]:
            raise DataError(
                f"{self._seg[patient]}: contour cells {{{len(contours)}, {len(contours[0]) if contours else 0}}} "
                f"do not match the images {path.name} (y, x, z, t) = {sol.shape}"
            )
        self._volume = (patient, sol)
        return sol

    def _load_raw(self, case_id: str) -> Case:
        match = re.fullmatch(r"(pat\d+)_t(\d+)", case_id)
        if not match:
            raise DataError(f"York case id {case_id!r} must be patN_tTT (TT = 1-based frame)")
        patient, t = match.group(1), int(match.group(2)) - 1
        sol = self._images_of(patient)
        if not 0 <= t < sol.shape[3]:
            raise DataError(f"{case_id}: frame {t + 1} outside 1..{sol.shape[3]} of {self._sol[patient].name}")
        contours = self._contours_of(patient)
        zs = [z for z in range(sol.shape[2]) if contours[z][t] is not None]
        if not zs:
            raise DataError(f"{case_id}: frame {t + 1} of {self._seg[patient].name} has no contour (all -99999)")
        stack = minmax(np.transpose(sol[:, :, :, t], (2, 0, 1)))
        shape = stack.shape[1:]
        label = np.zeros((len(zs), *shape), dtype=np.uint8)
        for i, z in enumerate(zs):
            where = f"{self._seg[patient]} cell ({z + 1}, {t + 1})"
            label[i] = endocardium_mask(contours[z][t], shape, where)  # type: ignore[arg-type]
        meta = {"frame": t + 1, "slices": [z + 1 for z in zs], "n_slices_total": int(sol.shape[2])}
        return Case(case_id, np.ascontiguousarray(stack[zs]), label, None, patient, meta)

    def check_extra(self) -> tuple[list[str], list[str]]:
        notes, problems = super().check_extra()
        if self.store is None:
            only_img = sorted(set(self._sol) - set(self._seg), key=natural_key)
            only_seg = sorted(set(self._seg) - set(self._sol), key=natural_key)
            if only_img:
                problems.append(f"image files without contours: {_ellipsis(only_img)}")
            if only_seg:
                problems.append(f"contour files without images: {_ellipsis(only_seg)}")
            total = with_contour = 0
            for p in self._patients_raw():
                if p in self._seg:
                    try:
                        cells = self._contours_of(p)
                    except DataError:
                        continue  # reported by the per-case check
                    total += sum(len(row) for row in cells)
                    with_contour += sum(c is not None for row in cells for c in row)
            notes.append(
                f"{with_contour} of {total} images carry a contour ({total - with_contour} are -99999, unused)"
            )
        return notes, problems
