"""How good is an uncertainty score? Error detection, selective risk and calibration, on counts (pure functions).

Every ranking metric here works on *score groups*: the distinct values of the uncertainty score (higher = more
uncertain) in increasing order, with the number of correctly and wrongly labelled pixels at each. Pixels with the
same score are tied: a ranking can only accept or reject them together. :func:`score_groups` builds the groups from
arrays (exact); :class:`ScoreHistogram` builds them from a fixed histogram (bounded memory, ties within a bin), so
the same formulas serve small hand-computed examples and millions of pixels.

* :func:`auroc` — area under the ROC curve of the score as a detector of pixel errors
  (P(s_error > s_correct) + 0.5 P(s_error = s_correct), the Mann-Whitney statistic);
* :func:`auprc` — average precision of that detector (errors are the positives; thresholds at the groups, as
  scikit-learn's ``average_precision_score``);
* :func:`risk_coverage` / :func:`aurc` — accept pixels from the most certain on, ties in random order: after
  accepting ``n`` pixels the selective risk is the expected error rate among them; ``AURC`` is its mean over
  ``n = 1 .. N`` (Geifman et al., ICLR 2019). Inside a group of ``m`` tied pixels (``e`` wrong) that follows
  ``N0`` accepted pixels (``E0`` wrong), the ``t``-th accepted pixel gives risk ``(E0 + t e / m) / (N0 + t)``
  (exact in expectation over the tie order), summed in closed form with harmonic numbers; without ties this is
  the usual rank-wise AURC;
* :func:`optimal_aurc` — the bound a perfect ranking reaches (every error rejected first):
  ``(1/N) sum_{i > N - E} (i - (N - E)) / i``; ``E-AURC = AURC - optimal`` is what the score loses by ranking;
* :func:`calibration` / :func:`ece` — reliability bins of the top-class probability (equal width on [0, 1],
  bin ``b`` holds ``b/M <= p < (b+1)/M``, p = 1 in the last) and the expected calibration error
  ``sum_b (n_b / N) |acc_b - conf_b|`` (Guo et al., ICML 2017; default M = 15).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_bench.core.errors import MetricInputError

_NAN = float("nan")
ECE_BINS = 15


def _counts(correct: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(correct, dtype=np.float64).ravel()
    e = np.asarray(errors, dtype=np.float64).ravel()
    if c.shape != e.shape:
        raise MetricInputError(f"correct and error counts differ in length: {c.shape} vs {e.shape}")
    if (c < 0).any() or (e < 0).any():
        raise MetricInputError("score-group counts must be non-negative")
    return c, e


def score_groups(score: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact groups of equal score: ``(values, correct_counts, error_counts)``, values increasing.

    Args:
        score: any shape, finite floats (higher = more uncertain).
        error: same shape, bool (True where the pixel's label is wrong).
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    e = np.asarray(error).ravel()
    if s.shape != e.shape:
        raise MetricInputError(f"score and error masks differ in size: {s.size} vs {e.size}")
    if not np.isfinite(s).all():
        raise MetricInputError("uncertainty scores must be finite")
    values, inverse = np.unique(s, return_inverse=True)
    errors = np.bincount(inverse, weights=e.astype(np.float64), minlength=len(values))
    totals = np.bincount(inverse, minlength=len(values)).astype(np.float64)
    return values, totals - errors, errors


def auroc(correct: np.ndarray, errors: np.ndarray) -> float:
    """AUROC of the score for detecting errors, from increasing score groups (NaN without both kinds)."""
    c, e = _counts(correct, errors)
    n_c, n_e = c.sum(), e.sum()
    if n_c == 0 or n_e == 0:
        return _NAN
    below = np.cumsum(c) - c  # correct pixels with a strictly lower score
    return float((e * (below + 0.5 * c)).sum() / (n_c * n_e))


def auprc(correct: np.ndarray, errors: np.ndarray) -> float:
    """Average precision of the score for detecting errors (thresholds from the most uncertain group down)."""
    c, e = _counts(correct, errors)
    n_e = e.sum()
    if n_e == 0:
        return _NAN
    tp = np.cumsum(e[::-1])
    flagged = np.cumsum((c + e)[::-1])
    gain = e[::-1] / n_e
    keep = flagged > 0
    return float((gain[keep] * tp[keep] / flagged[keep]).sum())


def risk_coverage(correct: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, risk)`` at the end of each score group, most certain first (empty groups dropped)."""
    c, e = _counts(correct, errors)
    keep = (c + e) > 0
    c, e = c[keep], e[keep]
    n = c.sum() + e.sum()
    if n == 0:
        return np.zeros(0), np.zeros(0)
    accepted = np.cumsum(c + e)
    return accepted / n, np.cumsum(e) / accepted


def _harmonic(n: np.ndarray) -> np.ndarray:
    """``H_n = sum_{i <= n} 1 / i`` for real ``n >= 0`` (digamma form)."""
    from scipy.special import digamma

    return digamma(np.asarray(n, dtype=np.float64) + 1.0) + np.euler_gamma


def aurc(correct: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve, ties in random order (see the module docstring); NaN for no pixels."""
    c, e = _counts(correct, errors)
    keep = (c + e) > 0
    c, e = c[keep], e[keep]
    m = c + e
    total = m.sum()
    if total == 0:
        return _NAN
    n0 = np.cumsum(m) - m  # pixels accepted before each group
    e0 = np.cumsum(e) - e
    b = e / m
    # sum_{t=1}^{m} (E0 + b t) / (N0 + t) = b m + (E0 - b N0) (H_{N0+m} - H_{N0})
    per_group = b * m + (e0 - b * n0) * (_harmonic(n0 + m) - _harmonic(n0))
    return float(per_group.sum() / total)


def optimal_aurc(n_total: float, n_errors: float) -> float:
    """AURC of a perfect ranking of ``n_total`` pixels of which ``n_errors`` are wrong (NaN for no pixels)."""
    n, e = int(round(n_total)), int(round(n_errors))
    if n <= 0:
        return _NAN
    if not 0 <= e <= n:
        raise MetricInputError(f"need 0 <= errors <= total, got {e} of {n}")
    if e == 0:
        return 0.0
    i = np.arange(n - e + 1, n + 1, dtype=np.float64)
    return float(((i - (n - e)) / i).sum() / n)


@dataclass
class Calibration:
    """Reliability bins: per bin the pixel count, the sum of top-class probabilities and of correct pixels."""

    count: np.ndarray
    conf_sum: np.ndarray
    correct_sum: np.ndarray

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.count) + 1)

    def confidence(self) -> np.ndarray:
        """Mean top-class probability per bin (NaN for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.conf_sum / self.count, np.nan)

    def accuracy(self) -> np.ndarray:
        """Fraction of correct pixels per bin (NaN for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.correct_sum / self.count, np.nan)


def calibration_bin(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin index of each top-class probability (``b/M <= p < (b+1)/M``; p = 1 in the last bin)."""
    p = np.asarray(confidence, dtype=np.float64)
    return np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Calibration:
    """Reliability bins of top-class probabilities ``confidence`` and bool ``correct`` (same shape)."""
    p = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct).ravel().astype(np.float64)
    if p.shape != ok.shape:
        raise MetricInputError(f"confidence and correct differ in size: {p.size} vs {ok.size}")
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise MetricInputError("probabilities must lie in [0, 1]")
    b = calibration_bin(p, bins)
    return Calibration(
        np.bincount(b, minlength=bins).astype(np.float64),
        np.bincount(b, weights=p, minlength=bins),
        np.bincount(b, weights=ok, minlength=bins),
    )


def ece(cal: Calibration) -> float:
    """Expected calibration error of reliability bins (NaN for no pixels)."""
    n = cal.count.sum()
    if n == 0:
        return _NAN
    return float(np.abs(cal.correct_sum - cal.conf_sum).sum() / n)


# -- bounded-memory score groups ------------------------------------------------------------------------------------


#: bins of :class:`ScoreHistogram` over the squashed score in [0, 1)
SCORE_BINS = 4096


def squash(score: np.ndarray) -> np.ndarray:
    """Monotone map of any real score to (0, 1): ``0.5 + 0.5 s / (1 + |s|)``; rankings (AUROC, AURC) are unchanged.
    Scores in [0, 1] land in [0.5, 0.75]: 1024 bins of a 4096-bin histogram, each ~ 1/1000 of a score unit wide."""
    s = np.asarray(score, dtype=np.float64)
    return 0.5 + 0.5 * s / (1.0 + np.abs(s))


class ScoreHistogram:
    """Streaming score groups: counts of correct and wrong pixels per histogram bin of the squashed score.

    Pixels in one bin count as tied (exact for discrete scores such as a 0/1 mask, which fall in two bins).
    """

    def __init__(self, bins: int = SCORE_BINS) -> None:
        self.bins = bins
        self.correct = np.zeros(bins, dtype=np.float64)
        self.errors = np.zeros(bins, dtype=np.float64)

    def add(self, score: np.ndarray, error: np.ndarray) -> None:
        """Count pixels: ``score`` floats and ``error`` bools of the same shape."""
        s = np.asarray(score, dtype=np.float64).ravel()
        e = np.asarray(error).ravel().astype(bool)
        if not np.isfinite(s).all():
            raise MetricInputError("uncertainty scores must be finite")
        b = np.clip((squash(s) * self.bins).astype(np.int64), 0, self.bins - 1)
        self.errors += np.bincount(b[e], minlength=self.bins)
        self.correct += np.bincount(b[~e], minlength=self.bins)

    def summary(self) -> dict[str, float]:
        """AUROC, AUPRC, AURC, its optimal bound, E-AURC, the error rate and the pixel count."""
        n, e = float(self.correct.sum() + self.errors.sum()), float(self.errors.sum())
        area, best = aurc(self.correct, self.errors), optimal_aurc(n, e)
        return {
            "auroc": auroc(self.correct, self.errors),
            "auprc": auprc(self.correct, self.errors),
            "aurc": area,
            "aurc_optimal": best,
            "e_aurc": area - best,
            "error_rate": e / n if n else _NAN,
            "pixels": n,
        }

    def curve(self, points: int = 101) -> tuple[list[float], list[float]]:
        """Expected risk-coverage curve (ties in random order) at ``points`` coverages ``(0, 1]``, plus coverage 0
        (the risk of the first accepted group)."""
        c, e = self.correct, self.errors
        keep = (c + e) > 0
        c, e = c[keep], e[keep]
        m = c + e
        total = m.sum()
        if total == 0:
            return [], []
        ends = np.cumsum(m)
        grid = np.linspace(1.0 / (points - 1), 1.0, points - 1)
        n = grid * total
        g = np.clip(np.searchsorted(ends, n - 1e-9), 0, len(m) - 1)
        n0, e0 = ends[g] - m[g], (np.cumsum(e) - e)[g]
        risk = (e0 + (n - n0) * e[g] / m[g]) / n
        return [0.0, *grid.tolist()], [float(e[0] / m[0]), *risk.tolist()]
