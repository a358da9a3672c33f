"""Dataset interface pieces: labelled budgets, label validation, slice preparation, streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_bench.core.data import count_from_budget, validate_label
from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.core.transforms import prepare_slices
from ssl_bench.training.augment import apply_augment, augment_2d
from ssl_bench.training.streams import CropSource, Stream, TensorSource


@pytest.mark.parametrize(
    ("budget", "total", "expected"), [(0.2, 70, 14), (0.1, 70, 7), (1.0, 70, 70), (7, 70, 7), (0.01, 20, 1)]
)
def test_count_from_budget(budget, total, expected):
    assert count_from_budget(budget, total) == expected


@pytest.mark.parametrize(
    ("budget", "pattern"), [(0, "positive"), (-1, "positive"), (80, "asks for 80"), (2.5, "must be an integer")]
)
def test_bad_budgets(budget, pattern):
    with pytest.raises(DataError, match=pattern):
        count_from_budget(budget, 70)


def test_labelled_patients_first_and_random():
    ds = DATASETS.get("cardiac-phantom")()
    train = ds.patients("train")
    assert ds.labelled_patients(0.2) == train[: len(train) // 5]
    assert ds.labelled_patients(2) == train[:2]
    r1, r2 = ds.labelled_patients(4, "random", seed=1), ds.labelled_patients(4, "random", seed=1)
    assert r1 == r2 and set(r1) <= set(train) and len(r1) == 4
    with pytest.raises(DataError, match="unknown labelled selection"):
        ds.labelled_patients(2, "best")


def test_validate_label_errors():
    with pytest.raises(DataError, match=r"case7: label values \[4, 9\] are outside 0..3"):
        validate_label(np.array([[0, 4], [9, 1]]), 4, "case7")
    with pytest.raises(DataError, match="non-integer"):
        validate_label(np.array([0.5, 1.0]), 4, "x")
    assert validate_label(np.array([[0.0, 3.0]]), 4, "x").dtype == np.uint8


def test_prepare_slices_handles_mixed_sizes():
    images = [np.random.rand(1, 20, 16).astype(np.float32), np.random.rand(1, 32, 32).astype(np.float32)]
    labels = [np.zeros((20, 16), np.uint8), np.full((32, 32), 2, np.uint8)]
    img, lab = prepare_slices(images, labels, (16, 16))
    assert img.shape == (2, 1, 16, 16) and lab.shape == (2, 16, 16)
    assert lab[1].unique().tolist() == [2] and lab.dtype == torch.uint8


def test_augmentation_keeps_image_and_label_aligned():
    label = torch.zeros(4, 8, 8, dtype=torch.long)
    label[:, :3, :2] = 1
    image = label[:, None].float()
    g = torch.Generator().manual_seed(0)
    img, lab, aug = augment_2d(image, label, "flip-rot", g)
    assert torch.equal(img[:, 0].long(), lab)
    assert aug.shape == (4, 2)
    assert torch.equal(apply_augment(label, aug), lab)  # the same transform reproduces the batch frame
    assert torch.equal(apply_augment(lab, aug, inverse=True), label)  # and inverts exactly


def test_stream_is_resumable_and_covers_every_sample():
    images = torch.arange(10, dtype=torch.float32)[:, None, None, None].expand(10, 1, 4, 4)
    a = Stream("s", TensorSource(images, None), 3, seed=0)
    seen = torch.cat([a.next_indices() for _ in range(4)])[:10]
    assert sorted(seen.tolist()) == list(range(10))  # one pass is a permutation
    state = a.state_dict()
    expected = [a.next_indices().tolist() for _ in range(5)]
    b = Stream("s", TensorSource(images, None), 3, seed=0)
    b.load_state_dict(state)
    assert [b.next_indices().tolist() for _ in range(5)] == expected


def test_crop_source_draws_random_padded_crops():
    vol = np.arange(6 * 10 * 10, dtype=np.float32).reshape(6, 10, 10)
    lab = (vol % 2).astype(np.uint8)
    src = CropSource([vol, vol[:3]], [lab, lab[:3]], (4, 8, 8))
    g = torch.Generator().manual_seed(0)
    batch = src.batch(torch.tensor([0, 1]), g, with_labels=True)
    assert batch.image.shape == (2, 1, 4, 8, 8) and batch.label.shape == (2, 4, 8, 8)
    z, y, x = batch.crop[0].tolist()
    assert torch.equal(batch.image[0, 0], torch.from_numpy(vol[z : z + 4, y : y + 8, x : x + 8]))
    assert torch.equal(batch.label[0], torch.from_numpy(lab[z : z + 4, y : y + 8, x : x + 8]).long())
    assert batch.image[1, 0, 3:].abs().sum() == 0  # the 3-slice volume is zero-padded to 4 slices
    views = list(src.fixed_views(8))
    assert views[0].image.shape == (2, 1, 4, 8, 8) and views[0].crop is None
