"""ACDC in the SSL4MIS HDF5 layout: real data when SSL_BENCH_ACDC is set, synthetic files for error paths."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import acdc_root

from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS

ACDC = DATASETS.get("acdc")


def test_real_acdc_splits_and_cases():
    ds = ACDC(acdc_root())
    splits = ds.splits()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [140, 20, 40]
    assert [len(ds.patients(s)) for s in ("train", "val", "test")] == [70, 10, 20]
    assert not set(ds.patients("train")) & set(ds.patients("test"))
    case = ds.load_case(splits["test"][0])
    assert case.image.ndim == 3 and case.image.shape == case.label.shape and case.spacing is None
    assert set(np.unique(case.label)) <= {0, 1, 2, 3}
    lab = ds.labelled_patients(3)
    assert lab == ds.patients("train")[:3]
    lab_cases = [c for c in splits["train"] if ds.group(c) in set(lab)]
    slices = ds.training_slices(lab_cases)
    # SSL4MIS: the first 3 patients' slices are the first 68 rows of train_slices.list
    assert len(slices) == 68
    assert slices.images[0].shape[0] == 1 and slices.labels[0].dtype == np.uint8


def _fake_root(tmp_path, label_value=1):
    (tmp_path / "data" / "slices").mkdir(parents=True)
    for name, ids in (
        ("train.list", ["patient001_frame01"]),
        ("val.list", ["patient002_frame01"]),
        ("test.list", ["patient003_frame01"]),
        ("train_slices.list", ["patient001_frame01_slice_0"]),
    ):
        (tmp_path / name).write_text("\n".join(ids) + "\n")
    with h5py.File(tmp_path / "data" / "slices" / "patient001_frame01_slice_0.h5", "w") as fh:
        fh["image"] = np.zeros((8, 8), np.float32)
        fh["label"] = np.full((8, 8), label_value, np.uint8)
    with h5py.File(tmp_path / "data" / "patient003_frame01.h5", "w") as fh:
        fh["image"] = np.zeros((2, 8, 8), np.float32)
        fh["label"] = np.zeros((2, 8, 9), np.uint8)
    return tmp_path


def test_wrong_root_layout(tmp_path):
    with pytest.raises(DataError, match=r"does not look like the SSL4MIS ACDC layout: missing \['train.list'"):
        ACDC(tmp_path)


def test_label_out_of_range_names_the_file(tmp_path):
    ds = ACDC(_fake_root(tmp_path, label_value=7))
    with pytest.raises(DataError, match=r"patient001_frame01_slice_0.h5: label values \[7\] are outside 0..3"):
        ds.training_slices(["patient001_frame01"])


def test_shape_mismatch_and_missing_files(tmp_path):
    ds = ACDC(_fake_root(tmp_path))
    with pytest.raises(DataError, match=r"expected image and label of equal shape"):
        ds.load_case("patient003_frame01")
    with pytest.raises(DataError, match=r"volume file .*patient002_frame01.h5 is missing"):
        ds.load_case("patient002_frame01")
    (tmp_path / "data" / "patient003_frame01.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        ds.load_case("patient003_frame01")
