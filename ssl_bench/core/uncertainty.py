"""Uncertainty-estimator interface: turn a network and an unlabelled batch into a certain/uncertain mask.

An estimator is registered in ``ESTIMATORS`` and used by methods that take ``--estimator`` (CoraNet, UA-MT).
It may require extra heads on the network it inspects (CoraNet's conservative/radical heads, an aleatoric
variance head): :meth:`UncertaintyEstimator.required_heads` lists them and the method builds its backbone
with them. Estimators run without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ssl_bench.core.backbone import HeadSpec, SegNet
from ssl_bench.core.method import StepInfo


@dataclass
class UncertaintyMap:
    """Output of an estimator for a batch ``[B, C, *S]``.

    Attributes:
        prob: ``[B, K, *S]`` predictive class probabilities (e.g. the mean over stochastic passes); the
            pseudo-label is ``prob.argmax(1)``.
        certain: ``[B, *S]`` bool, True where the prediction is considered certain.
        score: ``[B, *S]`` float uncertainty score (higher = more uncertain), or None if the estimator only
            yields a mask (kept for plots and analysis).
    """

    prob: torch.Tensor
    certain: torch.Tensor
    score: torch.Tensor | None = None

    @property
    def pseudo_label(self) -> torch.Tensor:
        """``[B, *S]`` int64 arg-max of ``prob``."""
        return self.prob.argmax(1)

    @property
    def certain_fraction(self) -> float:
        return float(self.certain.float().mean())


@dataclass(frozen=True)
class NoEstimatorParams:
    """This estimator has no options."""


class UncertaintyEstimator:
    """Base class of estimator plugins (register with ``@ESTIMATORS.register(name)``).

    Class attributes:
        Config: options dataclass (set through the owning method's ``params.estimator_options``).
        marks_uncertain: False for estimators that never mark a pixel uncertain (``none``); methods then skip
            their uncertain-region terms instead of training an always-empty loss.
    """

    Config: ClassVar[type] = NoEstimatorParams
    marks_uncertain: ClassVar[bool] = True

    def __init__(self, cfg: Any = None, num_classes: int = 2) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        self.num_classes = num_classes

    def required_heads(self) -> list[HeadSpec]:
        """Extra heads the inspected network must have (default none)."""
        return []

    def required_dropout(self) -> float:
        """Dropout probability the inspected network must be built with (0: none needed)."""
        return 0.0

    def head_loss(self, heads: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor | None:
        """Supervised loss that trains the estimator's extra heads on labelled data (``heads`` from
        ``forward_heads``, ``target`` ``[B, *S]``), or None if its heads need none."""
        return None

    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        """Estimate uncertainty of ``net`` on ``x`` ``[B, C, *S]``."""
        raise NotImplementedError

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else cls.__name__


def build_estimator(name: str, options: dict[str, Any] | None, num_classes: int) -> UncertaintyEstimator:
    """Instantiate estimator ``name`` with typed ``options`` (keys checked against its Config)."""
    from ssl_bench.core.config import from_dict
    from ssl_bench.core.registry import ESTIMATORS

    cls = ESTIMATORS.get(name)
    return cls(from_dict(cls.Config, options or {}, prefix=f"estimator {name}: "), num_classes)
