"""York cardiac MRI on synthetic .mat files in the distributed format (scipy.io.savemat): sol_yxzt (y, x, z, t)
images and manual_seg_32points cell arrays {Z, 20} of 65 x 2 (x, y) 1-based points or -99999."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.datasets.common import check_dataset, prepare_dataset
from ssl_bench.datasets.york import polygon_mask

YORK = DATASETS.get("york-endocardium")
T = 20


def rect_points(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """32 points (8 per side) around the rectangle [x0, x1] x [y0, y1], 1-based (x, y)."""
    s = np.linspace(0, 1, 8, endpoint=False)
    top = np.c_[x0 + s * (x1 - x0), np.full(8, y0)]
    right = np.c_[np.full(8, x1), y0 + s * (y1 - y0)]
    bottom = np.c_[x1 - s * (x1 - x0), np.full(8, y1)]
    left = np.c_[np.full(8, x0), y1 - s * (y1 - y0)]
    return np.vstack([top, right, bottom, left])


def contour(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """One 65 x 2 cell: endocardium rectangle, the [0 0] separator, an epicardium 2 px further out."""
    return np.vstack([rect_points(x0, x1, y0, y1), [[0.0, 0.0]], rect_points(x0 - 2, x1 + 2, y0 - 2, y1 + 2)])


def has_contour(n: int, z: int, t: int) -> bool:
    """Frames >= 4 have no contour at all; the first slice is contoured in even frames only."""
    return t < 4 and (z > 0 or t % 2 == 0)


def write_york(root, numbers, z_slices=2, size=32, n_frames=T):
    """sol_yxzt_patN.mat and manual_seg_32points_patN.mat for each N; the contour moves with the frame."""
    root.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        rng = np.random.default_rng(n)
        sol = rng.random((size, size, z_slices, n_frames)) * 300.0
        cells = np.empty((z_slices, n_frames), dtype=object)
        for z in range(z_slices):
            for t in range(n_frames):
                if has_contour(n, z, t):
                    shift = t % 3
                    cells[z, t] = contour(10.5 + shift, 20.5 + shift, 8.5, 14.5 + z)
                elif (z + t) % 2:
                    cells[z, t] = np.array([[-99999.0]])  # the scalar sentinel
                else:
                    cells[z, t] = np.full((65, 2), -99999.0)  # first element -99999 (what show_segs.m tests)
        savemat(str(root / f"sol_yxzt_pat{n}.mat"), {"sol_yxzt": sol})
        savemat(str(root / f"manual_seg_32points_pat{n}.mat"), {"manual_seg_32points": cells})
    return root


def expected_mask(t: int, z: int, size: int = 32) -> np.ndarray:
    shift = (
        t % 3
    )  # x in [10.5, 20.5] + shift (1-based) -> pixel columns 10..19 + shift; y 8.5..14.5 + z -> rows 8..13 + z
    mask = np.zeros((size, size), np.uint8)
    mask[8 : 14 + z, 10 + shift : 20 + shift] = 1
    return mask


@pytest.fixture(scope="module")
def york_full(tmp_path_factory):
    """All 33 patients (tiny: 32 x 32, 2 slices, 20 frames) in a sub-folder of the root."""
    root = tmp_path_factory.mktemp("york")
    write_york(root / "York_MRI", range(1, 34))
    return root


def test_polygon_mask_pixel_centres():
    cols, rows = rect_points(2.5, 6.5, 1.5, 3.5).T - 1.0
    expected = np.zeros((8, 10), bool)
    expected[1:3, 2:6] = True
    np.testing.assert_array_equal(polygon_mask(cols, rows, (8, 10)), expected)
    theta = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    cx, cy, r = 31.3, 29.7, 9.0
    disc = polygon_mask(cx + r * np.cos(theta), cy + r * np.sin(theta), (64, 64))
    yy, xx = np.mgrid[:64, :64]
    analytic = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    assert abs(int(disc.sum()) - np.pi * r * r) < 2 * np.pi * r * 0.5
    assert int((disc != analytic).sum()) < 2 * np.pi * r


def test_load_case_frames_slices_and_labels(york_full):
    ds = YORK(york_full)
    assert ds.layout == "mat" and ds.spacing_unit == "voxel"
    assert ds.cases_of("pat3") == [f"pat3_t{t:02d}" for t in range(1, 5)]  # frames 5-20 have no contour
    for t in (0, 1, 3):
        case = ds.load_case(f"pat3_t{t + 1:02d}")
        zs = [z for z in range(2) if has_contour(3, z, t)]
        assert case.meta["slices"] == [z + 1 for z in zs] and case.group == "pat3" and case.spacing is None
        sol = np.random.default_rng(3).random((32, 32, 2, T)) * 300.0
        stack = np.transpose(sol[:, :, :, t], (2, 0, 1))  # (z, y, x): rows are y
        stack = (stack - stack.min()) / (stack.max() - stack.min())
        np.testing.assert_allclose(case.image, stack[zs], atol=1e-6)
        for i, z in enumerate(zs):
            np.testing.assert_array_equal(case.label[i], expected_mask(t, z))
    with pytest.raises(DataError, match="frame 17 of manual_seg_32points_pat3.mat has no contour"):
        ds.load_case("pat3_t17")
    with pytest.raises(DataError, match=r"frame 21 outside 1..20"):
        ds.load_case("pat3_t21")


def test_splits_natural_order_and_budget(york_full):
    ds = YORK(york_full)
    splits = ds.splits()
    assert len(ds.patients("train")) == 26 and len(ds.patients("test")) == 7 and splits["val"] == []
    assert len(splits["train"]) == 26 * 4 and len({ds.group(c) for c in splits["test"]}) == 7
    lab = ds.labelled_patients(5)
    assert lab == ds.labelled_patients(0.2) and len(lab) == 5
    sorted_ids = ds._patients_raw()
    assert sorted_ids[:3] == ["pat1", "pat2", "pat3"] and sorted_ids[9] == "pat10"  # natural, not pat1, pat10, pat11
    slices = ds.training_slices([c for c in splits["train"] if ds.group(c) in set(lab)])
    assert len(slices) == 5 * (4 + 2)  # per patient: 4 frames x slice 2, plus slice 1 in the 2 even frames


def test_check_and_prepare(york_full, tmp_path):
    report = check_dataset(YORK(york_full))
    assert report.ok, report.text()
    assert "patients: 33 (train 26, val 0, test 7)" in report.text()
    assert any("198 of 1320 images carry a contour" in line for line in report.lines)
    dest = tmp_path / "prepared"
    prepare_dataset(YORK, york_full, dest, echo=lambda s: None)
    prepared = YORK(dest)
    assert prepared.splits() == YORK(york_full).splits()
    a, b = YORK(york_full).load_case("pat10_t04"), prepared.load_case("pat10_t04")
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.image, b.image)
    assert b.meta["slices"] == a.meta["slices"]


# -- bad input ----------------------------------------------------------------------------------------------------


def test_bad_cells_and_shapes_name_the_file(tmp_path):
    root = write_york(tmp_path, [1, 2, 3, 4])
    from scipy.io import loadmat

    def rewrite(n, edit):
        path = root / f"manual_seg_32points_pat{n}.mat"
        cells = loadmat(str(path))["manual_seg_32points"]
        cells = edit(cells)
        savemat(str(path), {"manual_seg_32points": cells})

    def bad_shape(c):
        c[1, 2] = np.zeros((64, 2))
        return c

    rewrite(1, bad_shape)
    rewrite(2, lambda c: np.concatenate([c, c[:1]], axis=0))  # one slice too many

    def outside(c):
        c[1, 0] = contour(25.5, 40.5, 8.5, 14.5)
        return c

    rewrite(3, outside)
    ds = YORK(root)
    with pytest.raises(DataError, match=r"manual_seg_32points_pat1.mat: cell \(2, 3\) has shape \(64, 2\)"):
        ds.load_case("pat1_t01")
    with pytest.raises(DataError, match=r"manual_seg_32points_pat2.mat: contour cells \{3, 20\} do not match .*"
                       r"sol_yxzt_pat2.mat"):  # fmt: skip
        ds.load_case("pat2_t01")
    with pytest.raises(DataError, match=r"pat3.mat cell \(2, 1\): endocardial contour outside the 32x32 image"):
        ds.load_case("pat3_t01")
    sol = root / "sol_yxzt_pat4.mat"
    sol.write_bytes(sol.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"sol_yxzt_pat4.mat: not a readable MATLAB file"):
        ds.load_case("pat4_t01")


def test_missing_files_v73_and_empty_root(tmp_path):
    root = write_york(tmp_path / "y", [1, 2])
    (root / "manual_seg_32points_pat2.mat").unlink()
    ds = YORK(root)
    with pytest.raises(DataError, match="missing contour file manual_seg_32points_pat2.mat"):
        ds.cases_of("pat2")
    report = check_dataset(ds)
    assert not report.ok
    assert any("missing contour file manual_seg_32points_pat2.mat" in p for p in report.problems)
    assert any("image files without contours: pat2" in p for p in report.problems)
    # MATLAB v7.3 (HDF5) files are named as such
    path = root / "manual_seg_32points_pat1.mat"
    path.unlink()
    with h5py.File(path, "w", userblock_size=512) as fh:
        fh["manual_seg_32points"] = np.zeros((2, 2))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan 1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")
    with pytest.raises(DataError, match="manual_seg_32points_pat1.mat: MATLAB v7.3"):
        YORK(root).cases_of("pat1")
    with pytest.raises(DataError, match=r"(?s)holds no sol_yxzt_patN.mat.*mridataset"):
        YORK((tmp_path / "empty").mkdir() or tmp_path / "empty")
