"""Uncertainty-score metrics against hand-computed values on small arrays (ties included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_bench.core.errors import MetricInputError
from ssl_bench.evaluation.uncertainty_metrics import (
    ScoreHistogram,
    auprc,
    aurc,
    calibration,
    ece,
    optimal_aurc,
    risk_coverage,
    score_groups,
    squash,
)
from ssl_bench.evaluation.uncertainty_stats import EstimatorStats

# five pixels; the two at score 0.2 are tied (one right, one wrong)
SCORE = np.array([0.1, 0.2, 0.2, 0.4, 0.5])
ERROR = np.array([False, True, False, True, True])


def test_score_groups_merge_ties():
    values, correct, errors = score_groups(SCORE, ERROR)
    assert values.tolist() == [0.1, 0.2, 0.4, 0.5]
    assert correct.tolist() == [1, 1, 0, 0] and errors.tolist() == [0, 1, 1, 1]


def test_auroc_hand_computed_with_a_tie():
    from ssl_bench.evaluation.uncertainty_metrics import auroc

    _, c, e = score_groups(SCORE, ERROR)
    # error pairs (error score > correct score): 0.2 vs {0.1: 1, 0.2: tie 0.5}, 0.4 and 0.5 beat both -> 5.5 / 6
    assert auroc(c, e) == pytest.approx(5.5 / 6)
    # one constant score: every pair is tied
    assert auroc(*score_groups(np.zeros(4), np.array([1, 0, 1, 0], bool))[1:]) == pytest.approx(0.5)
    # perfect and reversed rankings
    assert auroc(*score_groups(np.array([0.0, 1.0]), np.array([False, True]))[1:]) == 1.0
    assert auroc(*score_groups(np.array([1.0, 0.0]), np.array([False, True]))[1:]) == 0.0
    # no errors: undefined
    assert math.isnan(auroc(*score_groups(np.array([0.0, 1.0]), np.array([False, False]))[1:]))


def test_auprc_hand_computed_with_a_tie():
    _, c, e = score_groups(SCORE, ERROR)
    # thresholds 0.5, 0.4, 0.2 (tie group of 2), 0.1: precision 1, 1, 3/4 at recall steps of 1/3 each
    assert auprc(c, e) == pytest.approx((1 + 1 + 0.75) / 3)


def test_risk_coverage_and_aurc_hand_computed():
    _, c, e = score_groups(SCORE, ERROR)
    coverage, risk = risk_coverage(c, e)
    assert coverage.tolist() == pytest.approx([0.2, 0.6, 0.8, 1.0])
    assert risk.tolist() == pytest.approx([0.0, 1 / 3, 0.5, 0.6])
    # accepting pixel by pixel, the tie in random order: risks 0, (0 + 1/2) / 2, 1/3, 2/4, 3/5
    assert aurc(c, e) == pytest.approx((0 + 0.25 + 1 / 3 + 0.5 + 0.6) / 5)
    # without ties AURC is the mean selective risk at coverages 1/N ... 1
    _, c2, e2 = score_groups(np.array([0.1, 0.2, 0.3]), np.array([False, True, False]))
    assert aurc(c2, e2) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)


def test_optimal_aurc_bound():
    # N = 5, E = 3: risks at coverage 3/5, 4/5, 5/5 of a perfect ranking are 1/3, 2/4, 3/5
    assert optimal_aurc(5, 3) == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 5)
    assert optimal_aurc(5, 0) == 0.0 and optimal_aurc(2, 2) == pytest.approx((1 + 1) / 2)
    # a perfect score reaches it, even a tied (binary) one; the example above is above it
    _, c, e = score_groups(np.array([0, 0, 1, 1, 1.0]), np.array([0, 0, 1, 1, 1], bool))
    assert aurc(c, e) == pytest.approx(optimal_aurc(5, 3))
    assert aurc(*score_groups(SCORE, ERROR)[1:]) > optimal_aurc(5, 3)
    with pytest.raises(MetricInputError):
        optimal_aurc(3, 4)


def test_ece_hand_computed():
    conf = np.array([0.95, 0.95, 0.55, 0.35])
    correct = np.array([True, False, True, False])
    cal = calibration(conf, correct, bins=15)
    assert cal.count[14] == 2 and cal.count[8] == 1 and cal.count[5] == 1
    # |1 - 1.9| + |1 - 0.55| + |0 - 0.35| over 4 pixels
    assert ece(cal) == pytest.approx((0.9 + 0.45 + 0.35) / 4)
    # edges: p = 1 goes to the last bin, p = 0 to the first
    edge = calibration(np.array([0.0, 1.0]), np.array([False, True]), bins=10)
    assert edge.count[0] == 1 and edge.count[9] == 1 and ece(edge) == 0.0
    with pytest.raises(MetricInputError):
        calibration(np.array([1.2]), np.array([True]))


def test_histogram_matches_exact_groups():
    hist = ScoreHistogram()
    hist.add(SCORE[:2], ERROR[:2])  # streamed in two parts
    hist.add(SCORE[2:], ERROR[2:])
    s = hist.summary()
    assert s["auroc"] == pytest.approx(5.5 / 6)
    assert s["auprc"] == pytest.approx(2.75 / 3)
    assert s["aurc"] == pytest.approx((0 + 0.25 + 1 / 3 + 0.5 + 0.6) / 5)
    assert s["aurc_optimal"] == pytest.approx(optimal_aurc(5, 3))
    assert s["e_aurc"] == pytest.approx(s["aurc"] - s["aurc_optimal"])
    assert s["error_rate"] == 0.6 and s["pixels"] == 5
    # monotone squash keeps the order of any real score
    assert np.all(np.diff(squash(np.array([-5.0, -0.1, 0.0, 0.3, 2.0, 100.0]))) > 0)


def test_estimator_stats_per_class_and_mask_score():
    # 1 image, 2x2 pixels, 3 classes; pseudo-label [[1, 1], [2, 0]], label [[1, 2], [2, 0]]
    prob = torch.tensor([[[0.1, 0.2], [0.1, 0.9]], [[0.8, 0.6], [0.1, 0.05]], [[0.1, 0.2], [0.8, 0.05]]]).unsqueeze(0)
    label = torch.tensor([[[1, 2], [2, 0]]])
    certain = torch.tensor([[[True, False], [True, True]]])
    stats = EstimatorStats(3)
    stats.add(prob, certain, None, label)  # no score: the mask ranks (uncertain = 1)
    out = stats.summary()
    assert out["score_is_mask"] is True
    assert out["all"]["certain_fraction"] == 0.75 and out["all"]["error_rate"] == 0.25
    # the one error (pixel (0, 1)) is the one uncertain pixel: a perfect ranking
    assert out["all"]["auroc"] == 1.0 and out["all"]["aurc"] == pytest.approx(out["all"]["aurc_optimal"])
    # class 1 in the certain region: pseudo-label 1 at (0, 0) only, correct
    assert out["class_1"]["certain"] == {"ppv": 1.0, "tpr": 1.0, "csi": 1.0, "tp": 1.0, "fp": 0.0, "fn": 0.0}
    # over all pixels class 1 has a false positive at (0, 1) and class 2 a false negative there
    assert out["class_1"]["all"]["ppv"] == 0.5 and out["class_2"]["all"]["tpr"] == 0.5
    assert out["pred_1"]["pixels"] == 2 and out["pred_1"]["error_rate"] == 0.5
    assert out["pred_2"]["certain_fraction"] == 1.0
    curves = stats.curves()
    assert curves["all"]["coverage"][-1] == 1.0 and curves["all"]["risk"][-1] == pytest.approx(0.25)
    assert sum(curves["all"]["reliability"]["count"]) == 4


def test_tied_aurc_is_the_mean_over_tie_orders():
    """The closed form equals the average rank-wise AURC over every order of the tied pixels (brute force)."""
    import itertools

    score = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0])
    error = np.array([True, False, False, True, False, True])
    values = []
    for order in itertools.permutations(range(6)):
        ranked = sorted(range(6), key=lambda i: (score[i], order.index(i)))
        errs = np.cumsum(error[ranked])
        values.append(np.mean(errs / np.arange(1, 7)))
    assert aurc(*score_groups(score, error)[1:]) == pytest.approx(np.mean(values))
    # the plotted curve ends at the overall error rate and starts at the first group's
    hist = ScoreHistogram()
    hist.add(score, error)
    coverage, risk = hist.curve(7)
    assert coverage[-1] == 1.0 and risk[-1] == pytest.approx(0.5) and risk[0] == pytest.approx(1 / 3)
