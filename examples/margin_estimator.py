"""A user-written uncertainty estimator, used through ``--plugin`` (no change to ssl-bench needed).

``margin``: one deterministic pass; a pixel is certain where the gap between its two most probable classes is at
least ``min_margin`` (the "margin" of Scheffer et al., "Active Hidden Markov Models for Information Extraction",
IDA 2001). Try it with CoraNet (replacing the CRM, as Table VI does) or UA-MT::

    ssl-bench check --method coranet --estimator margin --plugin examples/margin_estimator.py
    ssl-bench run --method ua-mt --estimator margin --plugin examples/margin_estimator.py \\
        --dataset cardiac-phantom --preset smoke --set params.estimator_options.min_margin=0.5

An estimator is a class registered in ``ESTIMATORS`` with a ``Config`` dataclass (its options, set through the
owning method's ``params.estimator_options``) and an ``estimate`` method; it may declare extra heads
(``required_heads``), dropout (``required_dropout``) or a supervised loss for its heads (``head_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssl_bench import ESTIMATORS, UncertaintyEstimator, UncertaintyMap, stochastic_mode


@dataclass
class MarginConfig:
    """Options of the ``margin`` estimator."""

    #: certain where p_top1 - p_top2 >= min_margin
    min_margin: float = 0.4
    #: BatchNorm during the pass: "keep" (the net's mode), "batch" or "running" statistics
    bn: str = "keep"


@ESTIMATORS.register("margin")
class MarginEstimator(UncertaintyEstimator):
    """Top-two softmax margin: certain where p(1st) - p(2nd) >= min_margin (example plugin)."""

    Config = MarginConfig

    def __init__(self, cfg: MarginConfig | None = None, num_classes: int = 2) -> None:
        super().__init__(cfg, num_classes)
        if not 0.0 <= self.cfg.min_margin <= 1.0:
            raise ValueError(f"margin: min_margin must be in [0, 1], got {self.cfg.min_margin}")
        if self.cfg.bn not in ("keep", "batch", "running"):
            raise ValueError(f"margin: bn must be 'keep', 'batch' or 'running', got {self.cfg.bn!r}")

    @torch.no_grad()
    def estimate(self, net, x, step=None) -> UncertaintyMap:
        """``x`` ``[B, C, *S]`` -> probabilities ``[B, K, *S]``, certain mask and 1 - margin as the score."""
        # dropout off, BatchNorm running statistics untouched (a method's teacher may be in train mode)
        with stochastic_mode(net, dropout=False, bn=self.cfg.bn):
            prob = net(x).float().softmax(1)
        top2 = prob.topk(2, dim=1).values  # [B, 2, *S]
        margin = top2[:, 0] - top2[:, 1]
        return UncertaintyMap(prob=prob, certain=margin >= self.cfg.min_margin, score=1.0 - margin)
