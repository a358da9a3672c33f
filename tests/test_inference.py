"""Sliding-window inference: coverage, exact reconstruction for voxel-wise models, padding, blending."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_bench.evaluation.inference import (
    count_windows,
    gaussian_importance,
    predict_volume_3d,
    sliding_window_probs,
    window_starts,
)


def threshold_net(x: torch.Tensor) -> torch.Tensor:
    """A voxel-wise 'network': class 1 where the intensity is > 0.5 (translation-equivariant, no context)."""
    return torch.cat([0.5 - x, x - 0.5], dim=1) * 20


@pytest.mark.parametrize(
    ("size", "patch", "stride", "expected"),
    [(10, 4, 3, [0, 3, 6]), (10, 4, 4, [0, 4, 6]), (4, 4, 2, [0]), (3, 4, 1, [0]), (96, 96, 16, [0])],
)
def test_window_starts_cover_the_axis(size, patch, stride, expected):
    starts = window_starts(size, patch, stride)
    assert starts == expected
    covered = set()
    for s in starts:
        covered |= set(range(s, min(size, s + patch)))
    assert covered == set(range(size))


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize("shape", [(12, 20, 18), (5, 9, 7)])  # the second is smaller than the patch on every axis
def test_voxelwise_model_is_reconstructed_exactly(blend, shape):
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32)
    pred = predict_volume_3d(threshold_net, image, (8, 8, 8), (3, 5, 4), blend=blend, batch_size=3)
    assert pred.shape == shape and pred.dtype == np.uint8
    assert np.array_equal(pred, (image > 0.5).astype(np.uint8))


def test_probabilities_are_normalised_and_blend_matters_for_context_models():
    x = torch.rand(1, 10, 12, 12)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    probs_mean = sliding_window_probs(conv, x, (6, 6, 6), (2, 3, 3), blend="mean")
    probs_gauss = sliding_window_probs(conv, x, (6, 6, 6), (2, 3, 3), blend="gaussian")
    assert torch.allclose(probs_mean.sum(0), torch.ones(10, 12, 12), atol=1e-5)
    assert not torch.allclose(probs_mean, probs_gauss)  # zero padding at window borders differs by weight


def test_gaussian_importance_peaks_in_the_centre():
    w = gaussian_importance((9, 9, 9))
    assert w.max() == 1.0 and w[4, 4, 4] == 1.0 and w.min() >= 1e-3


def test_paper_stride_costs_many_more_windows():
    shape = (160, 200, 200)  # a cropped pancreas volume
    assert count_windows(shape, (96, 96, 96), (4, 16, 16)) > 10 * count_windows(shape, (96, 96, 96), (48, 48, 48))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown blend"):
        sliding_window_probs(threshold_net, torch.rand(1, 4, 4, 4), (2, 2, 2), (1, 1, 1), blend="max")
    with pytest.raises(ValueError, match="one entry per axis"):
        sliding_window_probs(threshold_net, torch.rand(1, 4, 4, 4), (2, 2), (1, 1, 1))
