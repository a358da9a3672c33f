"""Tests of the built-in procedural phantoms (``ssl_bench.datasets.phantom``)."""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import pytest

from ssl_bench.core.data import SliceSet, validate_label
from ssl_bench.core.errors import DataError
from ssl_bench.datasets import phantom
from ssl_bench.datasets.phantom import CardiacPhantom, PancreasPhantom

PHANTOMS = [CardiacPhantom, PancreasPhantom]
SMALL = {"n_patients": 4, "n_slices": 4, "size": 48}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def default_phantoms(tmp_path_factory):
    """Both phantoms at their default size (generated once for the module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_BENCH_CACHE", str(tmp_path_factory.mktemp("phantom_cache")))
        out = {}
        for cls in PHANTOMS:
            ds = cls()
            ds.arrays()
            out[cls] = ds
        return out


# -- registration and spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), [("cardiac-phantom", CardiacPhantom), ("pancreas-phantom", PancreasPhantom)])
def test_registered(name, cls):
    from ssl_bench.core.registry import DATASETS

    assert DATASETS._entries[name].obj is cls  # registered at import, independent of discovery
    try:
        found = DATASETS.get(name)
    except ImportError as exc:  # another built-in module of BUILTIN_MODULES may not exist yet
        pytest.skip(f"registry discovery failed on another built-in module: {exc}")
    assert found is cls


def test_specs():
    assert CardiacPhantom.spec.num_classes == 4
    assert CardiacPhantom.spec.label_names == ("background", "RV", "Myo", "LV")
    assert CardiacPhantom.spec.modality == "MR" and CardiacPhantom.spec.dims == 2
    assert PancreasPhantom.spec.num_classes == 2
    assert PancreasPhantom.spec.label_names == ("background", "pancreas")
    assert PancreasPhantom.spec.modality == "CT" and PancreasPhantom.spec.dims == 2
    for cls in PHANTOMS:
        assert cls.needs_root is False
        assert cls.presets == {}
    assert CardiacPhantom().spacing == (8.0, 1.5, 1.5)
    assert PancreasPhantom().spacing == (2.5, 0.8, 0.8)
    assert CardiacPhantom(size=48).spacing == (8.0, 3.0, 3.0)  # fixed field of view
    assert CardiacPhantom(n_slices=15).spacing == (4.0, 1.5, 1.5)  # fixed base-to-apex extent


@pytest.mark.parametrize("cls", PHANTOMS)
@pytest.mark.parametrize(
    "kwargs",
    [{"n_patients": 2}, {"n_slices": 0}, {"size": 8}, {"seed": -1}, {"n_patients": 3.5}, {"size": True}],
)
def test_bad_options(cls, kwargs):
    with pytest.raises(DataError):
        cls(**kwargs)


# -- splits -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", PHANTOMS)
def test_default_splits(cls):
    ds = cls()
    sp = ds.splits()
    assert set(sp) == {"train", "val", "test"}
    assert [len(sp[k]) for k in ("train", "val", "test")] == [20, 4, 6]
    ids = sp["train"] + sp["val"] + sp["test"]
    assert len(set(ids)) == 30
    assert ids[0] == "phantom001" and ids[-1] == "phantom030"
    assert ds.patients("train") == sp["train"]  # one volume per patient: group == case id
    assert not ds.cache_path.exists()  # splits do not generate anything


@pytest.mark.parametrize("n", [3, 4, 7, 10, 15, 30, 60, 100])
def test_split_sizes(n):
    n_train, n_val, n_test = phantom.split_sizes(n)
    assert n_train + n_val + n_test == n
    assert min(n_train, n_val, n_test) >= 1
    assert n_train >= n_test >= n_val or n <= 4


# -- determinism and cache -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", PHANTOMS)
def test_deterministic(cls, tmp_path, monkeypatch):
    a_img, a_lab = cls(**SMALL, seed=3).arrays()
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "other"))  # a second, independent generation
    b = cls(**SMALL, seed=3)
    b_img, b_lab = b.arrays()
    assert b.cache_path.parent == tmp_path / "other" / "phantoms"
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, c_lab = cls(**SMALL, seed=4).arrays()
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_lab, c_lab)


#: sha256 (first 16 hex digits) of the default arrays. A change means the generated data changed: if that was
#: intended, bump phantom.GENERATOR_VERSION and update these; if not (e.g. on another machine or library
#: version), the generator is not reproducible there.
GOLDEN = {CardiacPhantom: "343f6af39f610bfa", PancreasPhantom: "d830f114f629d249"}


@pytest.mark.parametrize("cls", PHANTOMS)
def test_golden_hash(cls, default_phantoms):
    images, labels = default_phantoms[cls].arrays()
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    assert digest == GOLDEN[cls], f"{cls.name} arrays changed (generator version {phantom.GENERATOR_VERSION})"


@pytest.mark.parametrize("cls", PHANTOMS)
def test_patients_independent_of_count(cls):
    few_img, few_lab = cls(n_patients=3, n_slices=4, size=48).arrays()
    many_img, many_lab = cls(n_patients=5, n_slices=4, size=48).arrays()
    np.testing.assert_array_equal(few_img, many_img[:3])
    np.testing.assert_array_equal(few_lab, many_lab[:3])


@pytest.mark.parametrize("cls", PHANTOMS)
def test_cache_written_and_reused(cls, _cache, monkeypatch):
    first = cls(**SMALL)
    img, lab = first.arrays()
    path = first.cache_path
    assert path.parent == _cache / "phantoms"
    assert path.name == f"{cls.name}_v{phantom.GENERATOR_VERSION}_n4_z4_s48_seed0.npz"
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others sharing the cache
    mtime = path.stat().st_mtime_ns

    def boom(self):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(cls, "generate", boom)
    second = cls(**SMALL)
    img2, lab2 = second.arrays()
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    assert path.stat().st_mtime_ns == mtime
    assert second.arrays()[0] is img2  # kept in memory


@pytest.mark.parametrize("cls", PHANTOMS)
@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-shape"])
def test_corrupt_cache_regenerated(cls, damage):
    ref_img, ref_lab = cls(**SMALL).arrays()
    path = cls(**SMALL).cache_path
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        bad = np.zeros((1, 2, 3, 4), np.uint8)
        np.savez(path, image_q=bad.astype(np.uint16), label=bad, version=1, source=phantom.SOURCE_FINGERPRINT)
    with pytest.warns(UserWarning, match="regenerating"):
        img, lab = cls(**SMALL).arrays()
    np.testing.assert_array_equal(img, ref_img)
    np.testing.assert_array_equal(lab, ref_lab)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is valid again
        img3, _ = cls(**SMALL).arrays()
    np.testing.assert_array_equal(img3, ref_img)


def test_cache_from_edited_generator_regenerated(monkeypatch):
    ref_img, _ = CardiacPhantom(**SMALL).arrays()
    path = CardiacPhantom(**SMALL).cache_path
    monkeypatch.setattr(phantom, "SOURCE_FINGERPRINT", "edited")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # expected after an edit: no warning
        img, _ = CardiacPhantom(**SMALL).arrays()
    np.testing.assert_array_equal(img, ref_img)
    with np.load(path) as data:  # rewritten by the "edited" generator
        assert str(data["source"]) == "edited"


def test_unwritable_cache_warns(_cache, monkeypatch):
    blocker = _cache / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SSL_BENCH_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="could not write"):
        img, _ = CardiacPhantom(**SMALL).arrays()
    assert img.shape == (4, 4, 48, 48)


def test_default_cache_dir(monkeypatch):
    monkeypatch.delenv("SSL_BENCH_CACHE")
    assert phantom.cache_dir() == phantom.Path.home() / ".cache" / "ssl-bench" / "phantoms"


# -- content ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", PHANTOMS)
def test_case_shapes_and_ranges(cls, default_phantoms):
    ds = default_phantoms[cls]
    for cid in ("phantom001", "phantom030"):
        case = ds.load_case(cid)
        assert case.case_id == cid and case.group == cid
        assert case.image.shape == (8, 96, 96) and case.image.dtype == np.float32
        assert case.label.shape == (8, 96, 96) and case.label.dtype == np.uint8
        assert case.image.min() == 0.0 and case.image.max() == 1.0  # min-max per volume
        assert np.all(np.isfinite(case.image))
        validate_label(case.label, cls.spec.num_classes, cid)
        assert case.spacing == ds.spacing
        case.image[:] = 5  # a copy: the in-memory arrays are untouched
        assert ds.load_case(cid).image.max() == 1.0


@pytest.mark.parametrize("cls", PHANTOMS)
def test_classes_present(cls, default_phantoms):
    ds = default_phantoms[cls]
    _, labels = ds.arrays()
    for c in range(cls.spec.num_classes):
        present = np.mean([(vol == c).any() for vol in labels])
        assert present >= 0.9, (cls.name, c, present)
    # some slices lack a foreground class (RV at the apex, pancreas beyond its extent)
    slices = labels.reshape(-1, *labels.shape[2:])
    absent = np.mean([not (s == 1).any() for s in slices])
    assert 0.02 < absent < 0.5, absent


@pytest.mark.parametrize("cls", PHANTOMS)
def test_not_separable_by_intensity(cls, default_phantoms):
    """An oracle intensity window per class must stay clearly imperfect (the task needs context)."""
    images, labels = default_phantoms[cls].arrays()
    bins = 128
    b = np.minimum((images * bins).astype(np.int64), bins - 1).ravel()
    hist = np.concatenate([[0], np.cumsum(np.bincount(b, minlength=bins))])
    lo, hi = np.triu_indices(bins)
    for c in cls.spec.foreground_classes:
        gt = (labels == c).ravel()
        hc = np.concatenate([[0], np.cumsum(np.bincount(b, weights=gt, minlength=bins))])
        dice = 2 * (hc[hi + 1] - hc[lo]) / (hist[hi + 1] - hist[lo] + gt.sum())
        assert dice.max() < 0.7, (cls.name, c, dice.max())


@pytest.mark.parametrize("cls", PHANTOMS)
def test_training_slices(cls, default_phantoms):
    ds = default_phantoms[cls]
    train = ds.splits()["train"][:3]
    s = ds.training_slices(train)
    assert isinstance(s, SliceSet) and len(s) == 24
    images, labels = np.stack(s.images), np.stack(s.labels)  # SliceSet holds per-slice arrays
    assert images.shape == (24, 1, 96, 96) and images.dtype == np.float32
    assert labels.shape == (24, 96, 96) and labels.dtype == np.uint8
    assert s.case_ids == [cid for cid in train for _ in range(8)]
    np.testing.assert_array_equal(images[8:16, 0], ds.load_case(train[1]).image)


@pytest.mark.parametrize("cls", PHANTOMS)
def test_unknown_case(cls):
    ds = cls(**SMALL)
    with pytest.raises(DataError, match="phantom001"):
        ds.load_case("patient001")
    assert not ds.cache_path.exists()


def test_no_temp_files_on_success(_cache):
    CardiacPhantom(**SMALL).arrays()
    PancreasPhantom(**SMALL).arrays()
    names = sorted(os.listdir(_cache / "phantoms"))
    assert len(names) == 2 and all(n.endswith(".npz") for n in names)
