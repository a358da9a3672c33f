"""Dataset interface pieces: labelled budgets, label validation, slice preparation, streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_bench.core.data import count_from_budget, validate_label
from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS
from ssl_bench.core.transforms import prepare_slices, resize_images, zoom_nearest
from ssl_bench.training.augment import apply_augment, augment_2d, rotate_nearest
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
    assert aug.shape == (4, 3) and not aug[:, 2].any()  # (k, flip, angle): flip-rot never rotates freely
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


# -- SSL4MIS augmentation and order-0 resize ----------------------------------------------------------------------


def test_ssl4mis_augment_probabilities_and_angles():
    g = torch.Generator().manual_seed(0)
    _, _, aug = augment_2d(torch.zeros(4000, 1, 8, 8), None, "ssl4mis", g)
    rot_flip, angle = aug[:, 1] == 1, aug[:, 2]
    assert abs(rot_flip.float().mean() - 0.5) < 0.03  # p = 1/2 rot90 + flip (always a flip)
    assert not (rot_flip & (angle != 0)).any() and not aug[~rot_flip, 0].any()  # the branches exclude each other
    rotated = ~rot_flip & (angle != 0)
    assert abs(rotated.float().mean() - 0.25 * 39 / 40) < 0.03  # p = 1/4 rotation (angle 0 drawn 1 in 40)
    assert angle.min() == -20 and angle.max() == 19 and torch.equal(angle, angle.round())  # randint(-20, 20)
    assert abs(angle[rotated].mean() + 0.5) < 1.5  # uniform on -20..19: mean -0.5
    counts = torch.bincount(aug[rot_flip, 0].long(), minlength=4)
    assert counts.min() > 0.2 * rot_flip.sum()  # the 4 reflections about equally often


def test_ssl4mis_augment_is_seeded():
    image = torch.rand(6, 1, 16, 16)
    a = augment_2d(image, None, "ssl4mis", torch.Generator().manual_seed(3))
    b = augment_2d(image, None, "ssl4mis", torch.Generator().manual_seed(3))
    c = augment_2d(image, None, "ssl4mis", torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and not torch.equal(a[2], c[2])


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("axis", [0, 1])
def test_rot_flip_matches_numpy(k, axis):
    """SSL4MIS random_rot_flip = np.flip(np.rot90(x, k), axis), stored as (k + 2 [axis 0], flip of the last axis)."""
    x = np.random.default_rng(0).random((7, 7))
    aug = torch.tensor([[(k + 2 * (axis == 0)) % 4, 1, 0.0]])
    assert np.array_equal(apply_augment(torch.from_numpy(x)[None], aug)[0].numpy(), np.flip(np.rot90(x, k), axis))


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_rotation_matches_scipy_order0(shape):
    from scipy import ndimage

    x = np.random.default_rng(1).random(shape) + 1.0
    for angle in (-20, -13, -1, 7, 19):
        ref = ndimage.rotate(x, angle, order=0, reshape=False)  # SSL4MIS random_rotate
        assert np.array_equal(rotate_nearest(torch.from_numpy(x), angle).numpy(), ref), angle


def test_rotation_keeps_label_values_and_alignment():
    label = torch.zeros(1, 32, 32, dtype=torch.long)
    label[0, 8:20, 10:24], label[0, 14:18, 12:16] = 2, 3
    image = label[:, None].float()
    aug = torch.tensor([[0, 0, 17.0]])
    lab, img = apply_augment(label, aug), apply_augment(image, aug)
    assert set(lab.unique().tolist()) <= {0, 2, 3} and lab.dtype == torch.long
    assert torch.equal(img[:, 0].long(), lab)  # nearest neighbour: image and label stay aligned
    assert (lab != label).any()


def test_rotation_inverse_round_trip_on_the_centre():
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    smooth = torch.sin(yy / 6) + torch.cos(xx / 5)  # varies by < 0.25 per pixel
    x = smooth[None, None]
    aug = torch.tensor([[0, 0, -19.0], [0, 0, 11.0]])
    back = apply_augment(apply_augment(x.expand(2, 1, 48, 48), aug), aug, inverse=True)
    centre = (yy - 23.5) ** 2 + (xx - 23.5) ** 2 < 20**2
    err = (back - x)[..., centre].abs()
    assert err.max() < 0.5 and err.mean() < 0.1  # lossy: nearest resampling twice, at most ~one pixel away
    assert (back[..., 0, 0] == 0).all()  # the corners are rotated out and come back as 0
    assert not torch.equal(back, x.expand(2, 1, 48, 48))


@pytest.mark.parametrize(("src", "dst"), [((216, 256), (256, 256)), ((154, 224), (256, 256)), ((256, 256), (101, 183))])
def test_nearest_resize_equals_scipy_zoom_order0(src, dst):
    """SSL4MIS zooms with scipy.ndimage.zoom(x, (h / H, w / W), order=0); neither torch 'nearest' nor
    'nearest-exact' does (corner-aligned grid), zoom_nearest does, with its 0 past the last pixel."""
    from scipy.ndimage import zoom

    x = np.random.default_rng(2).random(src).astype(np.float32) + 1.0
    ref = zoom(x, (dst[0] / src[0], dst[1] / src[1]), order=0)
    out = resize_images(torch.from_numpy(x)[None, None], dst, "nearest")[0, 0].numpy()
    assert np.array_equal(out, ref)
    for mode in ("nearest", "nearest-exact"):
        torch_out = torch.nn.functional.interpolate(torch.from_numpy(x)[None, None], size=dst, mode=mode)
        assert not np.array_equal(torch_out[0, 0].numpy(), ref)
    labels = np.random.default_rng(3).integers(0, 4, src).astype(np.uint8)
    ref_labels = zoom(labels, (dst[0] / src[0], dst[1] / src[1]), order=0)
    assert np.array_equal(zoom_nearest(torch.from_numpy(labels), dst).numpy(), ref_labels)


def test_prepare_slices_nearest_mode_and_bad_mode():
    images = [np.random.rand(1, 20, 16).astype(np.float32)]
    labels = [np.random.randint(0, 3, (20, 16)).astype(np.uint8)]
    img, lab = prepare_slices(images, labels, (16, 16), "nearest")
    assert torch.equal(img[0, 0], zoom_nearest(torch.from_numpy(images[0][0]), (16, 16)))
    assert torch.equal(lab[0], zoom_nearest(torch.from_numpy(labels[0]), (16, 16)))  # the images' sampling grid
    assert set(img[0, 0].flatten().tolist()) <= set(images[0].flatten().tolist())  # no interpolated values
    with pytest.raises(ValueError, match="dataset.image_resize must be one of"):
        prepare_slices(images, labels, (16, 16), "bicubic")


def test_evaluation_nearest_zooms_back_the_arg_max():
    from scipy.ndimage import zoom

    from ssl_bench.evaluation.evaluate import predict_volume_2d

    volume = np.random.default_rng(4).random((3, 20, 28)).astype(np.float32)

    def predict(x):  # class = input quantised to 3 levels
        return torch.stack([-(x[:, 0] - c).abs() for c in (1 / 6, 1 / 2, 5 / 6)], 1)

    pred = predict_volume_2d(predict, volume, (16, 16), image_resize="nearest")
    for z in range(3):  # SSL4MIS test_single_volume: zoom in (order 0), arg-max, zoom back (order 0)
        small = zoom(volume[z], (16 / 20, 16 / 28), order=0)
        cls = predict(torch.from_numpy(small)[None, None]).argmax(1)[0].numpy()
        assert np.array_equal(pred[z], zoom(cls, (20 / 16, 28 / 16), order=0))
    bilinear = predict_volume_2d(predict, volume, (16, 16))
    assert bilinear.shape == pred.shape and not np.array_equal(bilinear, pred)
