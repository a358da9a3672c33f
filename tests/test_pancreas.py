"""NIH Pancreas-CT on synthetic files in exactly the distributed formats: DICOM series (pydicom; InstanceNumber order
differs from file-name order, rescale slope/intercept), NIH label NIfTI with the transpose quirk, the duplicates
0025/0070, and the two preprocessed HDF5 variants of the 3D protocol."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.datasets.common import check_dataset, load_split_file, prepare_dataset
from ssl_bench.datasets.pancreas import bbox_crop_3d, read_dicom_series

P2D = DATASETS.get("pancreas-ct")
P3D = DATASETS.get("pancreas-ct-3d")

#: case -> (Z, rows, cols, pixel spacing, slice spacing, rescale slope)
CASES = {
    "PANCREAS_0001": (4, 24, 32, 0.5, 2.5, 1.0),
    "PANCREAS_0002": (5, 24, 32, 0.8, 1.5, 2.0),
    "PANCREAS_0003": (4, 200, 256, 1.0, 2.0, 1.0),
}


def case_arrays(cid: str) -> tuple[np.ndarray, np.ndarray]:
    """(HU (Z, rows, cols) int, label (Z, rows, cols) uint8) of a synthetic case: an asymmetric label box."""
    z, rows, cols, *_ = CASES[cid]
    rng = np.random.default_rng(int(cid[-4:]))
    hu = rng.integers(-400, 500, (z, rows, cols)).astype(np.int32) // 2 * 2  # even: exact with slope 2
    label = np.zeros((z, rows, cols), np.uint8)
    if rows > 100:
        label[1:3, 100:111, 50:61] = 1  # box rows 100-110, cols 50-60
    else:
        label[1:4, 3:9, 5:20] = 1
        label[2, 10:12, 20:24] = 1
    return hu, label


def write_dicom_series(folder, hu, pixel_spacing, slice_spacing, slope=1.0, intercept=-1024.0, shuffle=True):
    """One axial CT series, one file per slice; file names do not follow InstanceNumber order."""
    folder.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    order = np.random.default_rng(7).permutation(len(hu)) if shuffle else np.arange(len(hu))
    for k in range(len(hu)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", folder.parts[-3]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-100.0, -80.0, 50.0 - k * slice_spacing]  # cranio-caudal, InstanceNumber 1 top
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
        ds.SliceThickness = slice_spacing
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.round((hu[k] - intercept) / slope).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"1-{order[k] + 1:03d}.dcm", enforce_file_format=True)


def write_nih_label(path, label_zyx):
    """The NIH label: the (cols, rows, slices) array dump (label[:, :, k].T = slice k), with an affine that a
    geometry-aware reader would (wrongly) apply."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.transpose(label_zyx, (2, 1, 0)).astype(np.uint8), affine), str(path))


def write_pancreas_raw(root, cases=tuple(CASES)):
    """NBIA layout (manifest folder, two nested study/series folders) + TCIA label zip folder; 0025 as the current
    release has it: an empty image folder, but a label file."""
    base = root / "manifest-1599750808610" / "Pancreas-CT"
    labels = root / "TCIA_pancreas_labels-02-05-2017"
    for cid in cases:
        z, rows, cols, ps, ss, slope = CASES[cid]
        hu, label = case_arrays(cid)
        n = cid[-4:]
        write_dicom_series(base / cid / f"11-24-2015-PANCREAS{n}-Pancreas-1" / f"Pancreas-{n}", hu, ps, ss, slope)
        write_nih_label(labels / f"label{n}.nii.gz", label)
    (base / "PANCREAS_0025").mkdir(parents=True)
    write_nih_label(labels / "label0025.nii.gz", np.zeros((2, 4, 4), np.uint8))
    return root


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    return write_pancreas_raw(tmp_path_factory.mktemp("pancreas_raw"))


# -- DICOM + label reading --------------------------------------------------------------------------------------


def test_dicom_series_sorted_by_instance_number_with_hu(raw_root):
    for cid in ("PANCREAS_0001", "PANCREAS_0002"):  # slope 1 and 2, intercept -1024
        folder = next((raw_root / "manifest-1599750808610" / "Pancreas-CT" / cid).glob("*/*"))
        by_name = [pydicom.dcmread(f).InstanceNumber for f in sorted(folder.glob("*.dcm"))]
        assert by_name != sorted(by_name)  # file-name order is not the slice order
        hu, info = read_dicom_series(folder)
        np.testing.assert_array_equal(hu, case_arrays(cid)[0])
        assert info["instance_numbers"] == list(range(1, CASES[cid][0] + 1))
        assert info["spacing"] == (pytest.approx(CASES[cid][4]), CASES[cid][3], CASES[cid][3])


def test_2d_load_window_crop_and_label_quirk(raw_root):
    ds = P2D(raw_root)
    assert ds.layout == "raw"
    hu, label = case_arrays("PANCREAS_0001")
    case = ds.load_case("PANCREAS_0001")
    assert case.image.shape == case.label.shape == (4, 192, 240)  # smaller than the window: zero-padded
    clipped = np.clip(hu, -100, 240).astype(np.float32)
    expected = (clipped - clipped.min()) / (clipped.max() - clipped.min())
    np.testing.assert_allclose(case.image[:, :24, :32], expected, atol=1e-6)
    np.testing.assert_array_equal(case.label[:, :24, :32], label)  # the transpose quirk, undone
    assert case.image[:, 24:, :].max() == 0 and case.label[:, :, 32:].max() == 0
    assert case.spacing == (pytest.approx(2.5), 0.5, 0.5)
    # a large slice: the 192 x 240 window is centred on the label's in-plane box (rows 100-110, cols 50-60)
    big = ds.load_case("PANCREAS_0003")
    hu3, label3 = case_arrays("PANCREAS_0003")
    assert big.meta["crop_corner"] == [8, 0]  # centre row 105.5 -> 9.5 rounds to 10, clipped to 200 - 192 = 8
    np.testing.assert_array_equal(big.label, label3[:, 8:200, 0:240])
    assert big.meta["label_voxels_outside_crop"] == 0
    assert set(np.unique(big.label)) == {0, 1}


def test_2d_splits_ratios_and_duplicates(raw_root):
    ds = P2D(raw_root)
    sf = load_split_file("pancreas-ct")
    splits = ds.splits()
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (64, 0, 16)
    everything = splits["train"] + splits["test"]
    assert len(set(everything)) == 80 and not {"PANCREAS_0025", "PANCREAS_0070"} & set(everything)
    ratios = sf.raw["protocols"]["paper"]["ratios"]
    assert ratios == {"1:4": 13, "1:2": 21, "1:1": 32}
    sets = [ds.labelled_patients(n) for n in (13, 21, 32)]
    assert sets[0] == sets[1][:13] and sets[1] == sets[2][:21]  # nested
    assert ds.labelled_patients(0.5) == sets[2]
    assert sorted(ds.all_case_ids()) == ["PANCREAS_0001", "PANCREAS_0002", "PANCREAS_0003"]  # 0025 skipped
    with pytest.raises(DataError, match="duplicate of PANCREAS_0002"):
        ds.load_case("PANCREAS_0025")


def test_3d_coranet_preprocessing(raw_root):
    ds = P3D(raw_root)
    assert ds.spec.dims == 3 and ds.layout == "raw"
    # zoom by the in-plane spacing (0.5) on all three axes, window [-125, 275], min-max, crop (whole: < 96)
    hu, label = case_arrays("PANCREAS_0001")
    case = ds.load_case("PANCREAS_0001")
    zoomed = ndimage.zoom(hu.astype(np.float32), 0.5, order=1, mode="nearest")
    clipped = np.clip(zoomed, -125, 275)
    expected = (clipped - clipped.min()) / (clipped.max() - clipped.min())
    assert case.image.shape == (2, 12, 16) == expected.shape
    np.testing.assert_allclose(case.image, expected, atol=1e-6)
    np.testing.assert_array_equal(case.label, ndimage.zoom(label, 0.5, order=0, mode="nearest"))
    assert case.spacing == pytest.approx((5.0, 1.0, 1.0))  # z voxel = thickness / in-plane spacing
    # the label-based crop: box + 25, grown to 96 where the volume allows
    big = ds.load_case("PANCREAS_0003")
    assert big.meta["crop"] == [[0, 4], [58, 154], [8, 104]]
    hu3, label3 = case_arrays("PANCREAS_0003")
    np.testing.assert_array_equal(big.label, label3[:, 58:154, 8:104])
    assert big.image.shape == (4, 96, 96)


def test_bbox_crop_rules():
    label = np.zeros((300, 300, 300), np.uint8)
    label[100:200, 10:20, 280:290] = 1
    box = bbox_crop_3d(label, 25, 96)
    assert box == (slice(75, 225), slice(0, 96), slice(204, 300))
    with pytest.raises(DataError, match="label is empty"):
        bbox_crop_3d(np.zeros((4, 4, 4)), 25, 96)


def test_3d_splits_are_the_released_lists(raw_root):
    ds = P3D(raw_root)
    splits = ds.splits()
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (62, 0, 18)
    assert ds.labelled_patients(12) == [f"PANCREAS_{n:04d}" for n in range(1, 13)]
    assert ds.labelled_patients(0.2) == ds.labelled_patients(12)
    assert "PANCREAS_0025" not in splits["train"] and "PANCREAS_0070" not in splits["test"]
    assert splits["test"][0] == "PANCREAS_0064" and splits["test"][-1] == "PANCREAS_0082"


@pytest.mark.parametrize("variant", ["coranet", "coranet-bug", "mcnet"])
def test_3d_preprocessed_h5_variants(tmp_path, variant):
    rng = np.random.default_rng(0)
    image_xyz = rng.random((20, 16, 12)).astype(np.float32)  # (x, y, z), depth last
    label_xyz = np.zeros((20, 16, 12), np.float32 if variant == "mcnet" else np.uint8)
    label_xyz[5:9, 4:6, 2:7] = 1
    if variant == "mcnet":
        folder, name = tmp_path / "Pancreas_h5", "image0001_norm.h5"
    else:
        folder, name = tmp_path / "data", "0001.h5" if variant == "coranet" else "data0001.h5"
    folder.mkdir()
    for stem in (name, name.replace("0001", "0070")):
        with h5py.File(folder / stem, "w") as fh:
            fh["image"], fh["label"] = image_xyz, label_xyz
    ds = P3D(tmp_path)
    assert ds.layout == ("mcnet-h5" if variant == "mcnet" else "coranet-h5")
    case = ds.load_case("PANCREAS_0001")
    np.testing.assert_array_equal(case.image, np.transpose(image_xyz, (2, 1, 0)))
    np.testing.assert_array_equal(case.label, np.transpose(label_xyz, (2, 1, 0)).astype(np.uint8))
    assert case.image.shape == (12, 16, 20) and case.label.dtype == np.uint8
    assert case.spacing == ((1.0, 1.0, 1.0) if variant == "mcnet" else None)
    assert ds.spacing_unit == ("mm" if variant == "mcnet" else "voxel")
    assert ds.all_case_ids() == ["PANCREAS_0001"]  # the duplicate 0070 is skipped
    with pytest.raises(DataError, match="no HDF5 file for PANCREAS_0002"):
        ds.load_case("PANCREAS_0002")


# -- bad input ----------------------------------------------------------------------------------------------------


def _one_case(tmp_path, cid="PANCREAS_0002"):
    return write_pancreas_raw(tmp_path, cases=(cid,))


def test_corrupt_dicom_names_the_file(tmp_path):
    root = _one_case(tmp_path)
    victim = sorted(root.rglob("*.dcm"))[2]
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"{victim.name}: not a readable DICOM image"):
        P2D(root).load_case("PANCREAS_0002")


def test_duplicate_instance_number(tmp_path):
    root = _one_case(tmp_path)
    files = sorted(root.rglob("*.dcm"))
    ds = pydicom.dcmread(files[0])
    ds.InstanceNumber = pydicom.dcmread(files[1]).InstanceNumber
    ds.save_as(files[0])
    with pytest.raises(DataError, match=r"InstanceNumber \d+ also used by"):
        P2D(root).load_case("PANCREAS_0002")


def test_label_shape_and_orientation_errors(tmp_path):
    root = _one_case(tmp_path)
    label_path = root / "TCIA_pancreas_labels-02-05-2017" / "label0002.nii.gz"
    _, label = case_arrays("PANCREAS_0002")
    # stored in (rows, cols, slices) order instead of the NIH (cols, rows, slices): detectable on 24 x 32 slices
    nib.save(nib.Nifti1Image(np.transpose(label, (1, 2, 0)), np.eye(4)), str(label_path))
    with pytest.raises(DataError, match=r"label0002.nii.gz: label stored as \(rows, cols, slices\).*wrong orientation"):
        P2D(root).load_case("PANCREAS_0002")
    # one slice too many
    write_nih_label(label_path, np.zeros((6, 24, 32), np.uint8))
    with pytest.raises(DataError, match=r"label0002.nii.gz: label shape \(32, 24, 6\) .* \(5, 24, 32\)"):
        P3D(root).load_case("PANCREAS_0002")
    # values outside {0, 1}
    bad = label.copy()
    bad[0, 0, 0] = 2
    write_nih_label(label_path, bad)
    with pytest.raises(DataError, match=r"label0002.nii.gz: label values \[2\] are outside 0..1"):
        P2D(root).load_case("PANCREAS_0002")
    # truncated label
    write_nih_label(label_path, label)
    label_path.write_bytes(label_path.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"label0002.nii.gz: not a readable NIfTI file"):
        P2D(root).load_case("PANCREAS_0002")
    label_path.unlink()
    with pytest.raises(DataError, match=r"no label file label0002.nii.gz"):
        P2D(root).load_case("PANCREAS_0002")


def test_missing_root_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match=r"(?s)holds no PANCREAS_NNNN DICOM folders.*cancerimagingarchive.net"):
        P2D(tmp_path)
    with pytest.raises(DataError, match=r"(?s)imageNNNN_norm.h5.*Expected layout"):
        P3D(tmp_path)


def test_check_and_prepare_raw(raw_root, tmp_path):
    report = check_dataset(P2D(raw_root))
    assert not report.ok  # 77 of the 80 split cases are missing from this synthetic folder, each named
    assert any("no DICOM folder PANCREAS_0004" in p for p in report.problems)
    assert any("duplicates PANCREAS_0025 present" in line for line in report.lines)
    dest = tmp_path / "p3d"
    prepare_dataset(P3D, raw_root, dest, echo=lambda s: None)
    prepared = P3D(dest)
    assert prepared.prepared and prepared.layout == "raw" and prepared.spacing_unit == "mm"
    a, b = P3D(raw_root).load_case("PANCREAS_0003"), prepared.load_case("PANCREAS_0003")
    np.testing.assert_array_equal(a.image, b.image)
    assert a.spacing == pytest.approx(b.spacing) and b.meta["crop"] == a.meta["crop"]


def test_non_axial_or_mixed_series(tmp_path):
    root = _one_case(tmp_path)
    files = sorted(root.rglob("*.dcm"))
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
        ds.save_as(f)
    with pytest.raises(DataError, match=r"ImageOrientationPatient .* is not axial"):
        P2D(root).load_case("PANCREAS_0002")
    ds = pydicom.dcmread(files[0])
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.save_as(files[0])
    with pytest.raises(DataError, match=r"2 DICOM series"):
        P2D(root).load_case("PANCREAS_0002")
