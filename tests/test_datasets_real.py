"""ACDC official NIfTI and SSL4MIS HDF5 layouts on synthetic files written in exactly those formats; split files and
protocols; prepared caches; and, when SSL_BENCH_ACDC points to it, the real SSL4MIS copy (counts, labels, the
7/14-patient labelled sets, and a check that names a truncated volume)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from helpers import acdc_root

from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.datasets.common import (
    PreparedStore,
    check_dataset,
    load_split_file,
    prepare_dataset,
    seeded_order,
)

ACDC = DATASETS.get("acdc")
SPLIT = load_split_file("acdc")
ZOOMS = (1.5, 1.6, 8.0)  # nibabel (x, y, z) voxel size
SHAPE = (10, 12, 2)  # nibabel (x, y, z): x != y so a missed transpose shows


def _frames(pid: str) -> tuple[int, int]:
    """ED/ES frame numbers of a synthetic patient (ES varies, ED is 1 except for one patient)."""
    n = int(pid[-3:])
    return (1, 10 + n % 5) if n != 5 else (4, 15)


def _volume(pid: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (image int16, label uint8) in nibabel (x, y, z) order."""
    rng = np.random.default_rng([int(pid[-3:]), frame])
    image = rng.integers(0, 900, SHAPE).astype(np.int16)
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 3:7, :] = 1
    label[5:8, 3:6, 0] = 2
    label[6:9, 7:11, 1] = 3
    return image, label


def write_acdc_official(root: Path, patients: list[str], database: bool = True, testing: tuple[str, ...] = ()) -> Path:
    """The official ACDC layout: [database/]training/patientNNN/{Info.cfg, frames + _gt, _4d}, testing/ likewise."""
    base = root / "database" if database else root
    affine = np.diag([*ZOOMS, 1.0])
    for pid in [*patients, *testing]:
        pdir = base / ("testing" if pid in testing else "training") / pid
        pdir.mkdir(parents=True)
        ed, es = _frames(pid)
        (pdir / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 20\nWeight: 80.0\n")
        for frame in (ed, es):
            image, label = _volume(pid, frame)
            nib.save(nib.Nifti1Image(image, affine), str(pdir / f"{pid}_frame{frame:02d}.nii.gz"))
            nib.save(nib.Nifti1Image(label, affine), str(pdir / f"{pid}_frame{frame:02d}_gt.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 3), np.int16), affine), str(pdir / f"{pid}_4d.nii.gz"))
    return root


def expected_case(pid: str, which: int) -> tuple[np.ndarray, np.ndarray]:
    """What load_case must return for patientNNN_frame0{which}: (z, y, x), min-max image."""
    frame = sorted(_frames(pid))[which - 1]
    image, label = _volume(pid, frame)
    image = np.transpose(image, (2, 1, 0)).astype(np.float32)
    image = (image - image.min()) / (image.max() - image.min())
    return image, np.transpose(label, (2, 1, 0))


def write_ssl4mis(root: Path, train: list[str], val: list[str], test: list[str], slices_in_data: bool = False) -> Path:
    """The SSL4MIS layout built from the same synthetic volumes: lists, 1-based slice files in shuffled list order,
    val/test volumes (gzip, like the real copy)."""
    slice_dir = root / "data" if slices_in_data else root / "data" / "slices"
    slice_dir.mkdir(parents=True)
    vols = {
        s: [f"{p}_frame0{k}" for p in ps for k in (1, 2)] for s, ps in (("train", train), ("val", val), ("test", test))
    }
    for split, ids in vols.items():
        (root / f"{split}.list").write_text("\n".join(ids) + "\n")
    rows = []
    rng = np.random.default_rng(0)
    for vid in vols["train"]:
        image, label = expected_case(vid[:10], int(vid[-1]))
        ks = list(range(1, image.shape[0] + 1))
        rng.shuffle(ks)
        for k in ks:
            rows.append(f"{vid}_slice_{k}")
            with h5py.File(slice_dir / f"{vid}_slice_{k}.h5", "w") as fh:
                fh.create_dataset("image", data=image[k - 1], compression="gzip")
                fh.create_dataset("label", data=label[k - 1], compression="gzip")
    (root / "train_slices.list").write_text("\n".join(rows) + "\n")
    for vid in vols["val"] + vols["test"]:
        image, label = expected_case(vid[:10], int(vid[-1]))
        with h5py.File(root / "data" / f"{vid}.h5", "w") as fh:
            fh.create_dataset("image", data=image, compression="gzip")
            fh.create_dataset("label", data=label, compression="gzip")
    return root


ALL_PATIENTS = [p for s in ("train", "val", "test") for p in SPLIT.split[s]]


@pytest.fixture(scope="module")
def official_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 100 training patients (tiny volumes) + 2 testing patients, official layout."""
    return write_acdc_official(
        tmp_path_factory.mktemp("acdc_official"), ALL_PATIENTS, testing=("patient101", "patient102")
    )


# -- official layout ----------------------------------------------------------------------------------------------


def test_official_layout_arrays_spacing_frames(tmp_path):
    root = write_acdc_official(tmp_path, ["patient001", "patient005"])
    ds = ACDC(root)
    assert ds.layout == "official" and ds.spacing_unit == "mm"
    for pid in ("patient001", "patient005"):
        for which in (1, 2):
            case = ds.load_case(f"{pid}_frame0{which}")
            image, label = expected_case(pid, which)
            assert case.image.dtype == np.float32 and case.image.shape == (2, 12, 10)
            np.testing.assert_allclose(case.image, image, atol=1e-6)
            np.testing.assert_array_equal(case.label, label)
            assert case.spacing == (8.0, pytest.approx(1.6), 1.5)
            assert case.group == pid and case.meta["phase"] == ("ED" if which == 1 else "ES")
            assert case.meta["frame"] == sorted(_frames(pid))[which - 1]
    assert ds.load_case("patient005_frame02").meta["file"] == "patient005_frame15.nii.gz"
    # training slices are the volumes' slices; 2 volumes x 2 slices
    slices = ds.training_slices(["patient001_frame01", "patient001_frame02"])
    assert len(slices) == 4 and slices.images[0].shape == (1, 12, 10)


def test_official_layout_without_database_folder(tmp_path):
    ds = ACDC(write_acdc_official(tmp_path, ["patient003"], database=False))
    assert ds.load_case("patient003_frame02").image.shape == (2, 12, 10)


def test_official_bad_files_name_the_file(tmp_path):
    root = write_acdc_official(tmp_path, ["patient001", "patient002", "patient003", "patient004"])
    pdir = root / "database" / "training"
    ds = ACDC(root)
    # missing frame file
    (pdir / "patient001" / "patient001_frame01_gt.nii.gz").unlink()
    with pytest.raises(DataError, match=r"missing frame file .*patient001_frame01_gt.nii.gz"):
        ds.load_case("patient001_frame01")
    # label shape mismatch
    affine = np.diag([*ZOOMS, 1.0])
    nib.save(
        nib.Nifti1Image(np.zeros((10, 12, 3), np.uint8), affine), str(pdir / "patient002/patient002_frame01_gt.nii.gz")
    )
    with pytest.raises(DataError, match=r"patient002_frame01_gt.nii.gz: label shape \(10, 12, 3\) differs"):
        ds.load_case("patient002_frame01")
    # wrong orientation: the label is flipped along x
    flipped = affine.copy()
    flipped[0, 0] = -flipped[0, 0]
    _, label = _volume("patient003", 1)
    nib.save(nib.Nifti1Image(label, flipped), str(pdir / "patient003/patient003_frame01_gt.nii.gz"))
    with pytest.raises(DataError, match=r"patient003_frame01_gt.nii.gz: orientation LAS differs from its image"):
        ds.load_case("patient003_frame01")
    # labels outside 0..3
    bad = label.copy()
    bad[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(bad, affine), str(pdir / "patient003/patient003_frame01_gt.nii.gz"))
    with pytest.raises(DataError, match=r"patient003_frame01_gt.nii.gz: label values \[7\] are outside 0..3"):
        ds.load_case("patient003_frame01")
    # truncated NIfTI
    path = pdir / "patient004" / "patient004_frame01.nii.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"patient004_frame01.nii.gz: not a readable NIfTI file, truncated"):
        ds.load_case("patient004_frame01")
    # broken Info.cfg
    (pdir / "patient004" / "Info.cfg").write_text("Group: NOR\n")
    with pytest.raises(DataError, match=r"Info.cfg: no valid 'ED: <frame>' line"):
        ds.load_case("patient004_frame02")


def test_empty_or_wrong_root(tmp_path):
    with pytest.raises(DataError, match=r"nor like the official layout.*Download: https://www.creatis"):
        ACDC(tmp_path)
    with pytest.raises(DataError, match=r"(?s)is not a folder.*Expected layout"):
        ACDC(tmp_path / "nope")


# -- split file and protocols -------------------------------------------------------------------------------------


def test_split_file_protocols_and_budgets(official_full):
    ds = ACDC(official_full)
    splits = ds.splits()
    assert [len(ds.patients(s)) for s in ("train", "val", "test")] == [70, 10, 20]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [140, 20, 40]
    for cases in splits.values():  # ED and ES of a patient in the same split
        for pid in {ds.group(c) for c in cases}:
            assert {f"{pid}_frame01", f"{pid}_frame02"} <= set(cases)
    ssl4mis = SPLIT.raw["protocols"]["ssl4mis"]
    assert ds.labelled_patients(7) == ssl4mis["labelled"]["7"] == ds.patients("train")[:7]
    assert ds.labelled_patients(0.2) == ssl4mis["labelled"]["14"]
    assert ssl4mis["slices"] == {"3": 68, "7": 136, "14": 256, "21": 396, "28": 512, "35": 664}
    assert ds.labelled_patients(7)[:3] == ["patient099", "patient038", "patient050"]
    for seed in (0, 1, 2):  # dct: pinned seeded draws, nested, 20 % = 14
        pinned = SPLIT.raw["protocols"]["dct"]["seeds"][str(seed)]["labelled"]
        assert ds.labelled_patients(0.2, "random", seed) == pinned["14"]
        assert ds.labelled_patients(7, "random", seed) == pinned["7"] == pinned["14"][:7]
    assert ds.labelled_patients(14, "random", 7) == seeded_order(ds.patients("train"), 7)[:14]
    assert len({tuple(ds.labelled_patients(14, "random", s)) for s in range(3)}) == 3
    info = ds.split_info("random")
    assert info["protocol"] == "dct" and info["version"] == 1 and len(info["sha256"]) == 64


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["split"]["test"].append(d["split"]["train"][0]), "is in both train and test"),
        (lambda d: d["split"].update(test=[]), "empty train or test split"),
        (lambda d: d["protocols"]["ssl4mis"]["labelled"]["7"].reverse(), "not the first 7 of its order"),
        (lambda d: d["protocols"]["dct"]["seeds"]["1"]["order"].reverse(), "differs from seeded_order"),
        (lambda d: d.pop("version"), "integer 'version'"),
    ],
)
def test_split_file_validation(tmp_path, edit, message):
    data = json.loads(SPLIT.path.read_text())
    edit(data)
    (tmp_path / "acdc.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        load_split_file("acdc", tmp_path)


def test_all_split_files_are_valid_and_nested():
    for name, counts in (("acdc", (70, 10, 20)), ("pancreas-ct", (64, 0, 16)), ("pancreas-ct-3d", (62, 0, 18))):
        sf = load_split_file(name)
        assert tuple(len(sf.split[s]) for s in ("train", "val", "test")) == counts
        assert {p.selection for p in sf.protocols.values()} == {"first", "random"}
    assert tuple(len(load_split_file("york").split[s]) for s in ("train", "val", "test")) == (26, 0, 7)


# -- SSL4MIS layout on synthetic files ----------------------------------------------------------------------------


def test_ssl4mis_synthetic_equals_official(tmp_path):
    train, val, test = ["patient003", "patient004"], ["patient002"], ["patient001"]
    official = ACDC(write_acdc_official(tmp_path / "off", train + val + test))
    h5 = ACDC(write_ssl4mis(tmp_path / "h5", train, val, test))
    assert h5.layout == "ssl4mis" and h5.spacing_unit == "voxel"
    for cid in ("patient003_frame02", "patient001_frame01"):  # a stacked training volume and a test volume
        a, b = official.load_case(cid), h5.load_case(cid)
        np.testing.assert_allclose(a.image, b.image, atol=1e-6)
        np.testing.assert_array_equal(a.label, b.label)
        assert b.spacing is None
    assert h5.load_case("patient003_frame01").meta["stacked_from_slices"] == 2
    assert h5.patients("train") == train and h5.labelled_patients(1) == ["patient003"]
    assert not h5.split_info()["lists_match_split_file"]
    report = check_dataset(h5)
    assert report.ok, report.text()
    assert "patients: 4 (train 2, val 1, test 1)" in report.text()
    # slices directly in data/ are accepted too
    flat = ACDC(write_ssl4mis(tmp_path / "flat", train, val, test, slices_in_data=True))
    assert len(flat.training_slices(["patient004_frame01"])) == 2


def test_ssl4mis_empty_split_list(tmp_path):
    root = write_ssl4mis(tmp_path, ["patient003"], ["patient002"], ["patient001"])
    (root / "test.list").write_text("\n")
    with pytest.raises(DataError, match=r"split list .*test.list is empty"):
        ACDC(root)


# -- prepared cache ---------------------------------------------------------------------------------------------


def test_prepare_official_is_idempotent_and_resumable(tmp_path, monkeypatch):
    src = write_acdc_official(tmp_path / "raw", ["patient001", "patient002", "patient003"])
    dest = tmp_path / "prepared"
    # an interrupted prepare leaves nothing that looks complete
    calls = {"n": 0}
    original = ACDC._load_official

    def flaky(self, case_id):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, case_id)

    monkeypatch.setattr(ACDC, "_load_official", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(ACDC, src, dest, echo=lambda s: None)
    assert not (dest / "dataset.json").exists() and len(list((dest / "cases").glob("*.h5"))) == 3
    assert not list((dest / "cases").glob("*.tmp"))
    with pytest.raises(DataError, match="unfinished `ssl-bench data prepare acdc`"):
        ACDC(dest)
    monkeypatch.setattr(ACDC, "_load_official", original)
    messages: list[str] = []
    prepare_dataset(ACDC, src, dest, echo=messages.append)
    assert "(3 reused from an earlier run)" in messages[-1]
    meta = json.loads((dest / "dataset.json").read_text())
    assert meta["name"] == "acdc" and meta["source_layout"] == "official" and meta["spacing_unit"] == "mm"
    assert meta["split_file"]["sha256"] == SPLIT.sha256 and "CC BY-NC-SA" in meta["licence"]
    assert sorted(meta["cases"]) == [f"patient00{i}_frame0{k}" for i in (1, 2, 3) for k in (1, 2)]
    prepared, raw = ACDC(dest), ACDC(src)
    assert prepared.layout == "official" and prepared.prepared
    for cid in meta["cases"]:
        a, b = raw.load_case(cid), prepared.load_case(cid)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.spacing == b.spacing and b.meta["phase"] == a.meta["phase"]
    # idempotent
    messages.clear()
    prepare_dataset(ACDC, src, dest, echo=messages.append)
    assert "nothing to do" in messages[-1]
    # a stale preprocessing hash is refused with the rerun hint
    meta["preprocessing_hash"] = "0" * 64
    (dest / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="prepared with other preprocessing.*--force"):
        ACDC(dest)
    with pytest.raises(DataError, match="another source or preprocessing.*--force"):
        prepare_dataset(ACDC, src, dest, echo=lambda s: None)
    prepare_dataset(ACDC, src, dest, force=True, echo=lambda s: None)
    assert ACDC(dest).load_case("patient001_frame01").image.shape == (2, 12, 10)


def test_prepare_refuses_foreign_folder_and_prepared_source(tmp_path):
    src = write_acdc_official(tmp_path / "raw", ["patient001"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and is not a prepared ssl-bench folder"):
        prepare_dataset(ACDC, src, tmp_path / "other", echo=lambda s: None)
    prepare_dataset(ACDC, src, tmp_path / "p", echo=lambda s: None)
    with pytest.raises(DataError, match="already a prepared folder"):
        prepare_dataset(ACDC, tmp_path / "p", tmp_path / "q", echo=lambda s: None)
    assert isinstance(PreparedStore(tmp_path / "p", "acdc"), PreparedStore)
    with pytest.raises(DataError, match="holds the prepared dataset 'acdc', not 'york-endocardium'"):
        DATASETS.get("york-endocardium")(tmp_path / "p")


# -- real ACDC (SSL4MIS copy) -------------------------------------------------------------------------------------


@pytest.mark.acdc
def test_real_acdc_counts_labels_and_labelled_sets():
    ds = ACDC(acdc_root())
    assert ds.layout == "ssl4mis"
    assert [len(ds.patients(s)) for s in ("train", "val", "test")] == [70, 10, 20]
    info = ds.split_info()
    assert info["lists_match_split_file"], "the real lists must equal datasets/splits/acdc.json"
    assert [ds.patients(s) for s in ("train", "val", "test")] == [SPLIT.split[s] for s in ("train", "val", "test")]
    train = ds.splits()["train"]
    for budget, n_slices in ((7, 136), (14, 256)):
        lab = ds.labelled_patients(budget)
        assert lab == SPLIT.raw["protocols"]["ssl4mis"]["labelled"][str(budget)]
        slices = ds.training_slices([c for c in train if ds.group(c) in set(lab)])
        assert len(slices) == n_slices  # = the first n rows of train_slices.list, exactly as SSL4MIS
        rows = (Path(acdc_root()) / "train_slices.list").read_text().split()[:n_slices]
        assert {r.rsplit("_slice_", 1)[0] for r in rows} == set(slices.case_ids)
    all_slices = ds.training_slices(train)
    assert len(all_slices) == 1312
    assert set(np.unique(np.concatenate([lab.ravel() for lab in all_slices.labels]))) == {0, 1, 2, 3}
    # a stacked training volume holds its slice files in slice-index order
    case = ds.load_case("patient099_frame01")
    with h5py.File(Path(acdc_root()) / "data" / "slices" / "patient099_frame01_slice_3.h5") as fh:
        np.testing.assert_array_equal(case.image[2], fh["image"][()])
    test_case = ds.load_case(ds.splits()["test"][0])
    assert set(np.unique(test_case.label)) <= {0, 1, 2, 3} and test_case.spacing is None


@pytest.mark.acdc
def test_real_acdc_check_report_and_truncated_copy(tmp_path):
    real = Path(acdc_root())
    # a copy made of symlinks, with one truncated test volume
    (tmp_path / "data" / "slices").mkdir(parents=True)
    for f in real.glob("*.list"):
        os.symlink(f, tmp_path / f.name)
    for f in (real / "data").glob("*.h5"):
        os.symlink(f, tmp_path / "data" / f.name)
    for f in (real / "data" / "slices").glob("*.h5"):
        os.symlink(f, tmp_path / "data" / "slices" / f.name)
    bad = tmp_path / "data" / "patient001_frame02.h5"
    data = (real / "data" / "patient001_frame02.h5").read_bytes()
    bad.unlink()
    bad.write_bytes(data[: len(data) // 2])
    report = check_dataset(ACDC(tmp_path))
    assert not report.ok
    assert any(re.search(r"patient001_frame02.h5: not a readable HDF5 file", p) for p in report.problems)
    assert len(report.problems) == 1, report.problems
    text = report.text()
    assert "patients: 100 (train 70, val 10, test 20)" in text
    assert re.search(r"train\s+70\s+140\s+1312", text)


def test_prepare_skips_unused_cases_that_fail(tmp_path):
    """An ACDC testing/ patient without ground truth (older copies) is in no split: skipped, not fatal."""
    src = write_acdc_official(tmp_path / "raw", ["patient001"], testing=("patient101",))
    for gt in (src / "database" / "testing" / "patient101").glob("*_gt.nii.gz"):
        gt.unlink()
    messages: list[str] = []
    prepare_dataset(ACDC, src, tmp_path / "p", echo=messages.append)
    meta = json.loads((tmp_path / "p" / "dataset.json").read_text())
    assert sorted(meta["cases"]) == ["patient001_frame01", "patient001_frame02"]
    assert sorted(meta["skipped"]) == ["patient101_frame01", "patient101_frame02"]
    assert any("198 split cases are not in" in m for m in messages)
    prepare_dataset(ACDC, src, tmp_path / "p", echo=messages.append)
    assert "nothing to do" in messages[-1]
