"""Weight schedules of semi-supervised losses, as functions of progress (pure, no state).

All take ``current`` and ``length`` in the same unit (steps or epochs) and return a factor in [0, 1].
"""

from __future__ import annotations

import math


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2), t = clip(current / length, 0, 1) (Laine & Aila 2017; Mean Teacher; UA-MT)."""
    if length <= 0:
        return 1.0
    t = min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def linear_rampup(current: float, length: float) -> float:
    """t = clip(current / length, 0, 1)."""
    if length <= 0:
        return 1.0
    return float(min(max(current, 0.0), length) / length)


def cosine_rampdown(current: float, length: float) -> float:
    """0.5 (cos(pi t) + 1), t = clip(current / length, 0, 1) (Mean Teacher's learning-rate ramp-down)."""
    if length <= 0:
        return 1.0
    t = min(max(current, 0.0), length) / length
    return float(0.5 * (math.cos(math.pi * t) + 1.0))


RAMPS = {"sigmoid": sigmoid_rampup, "linear": linear_rampup, "none": lambda current, length: 1.0}


def ramp(kind: str, current: float, length: float) -> float:
    """Dispatch by name: ``sigmoid`` (default in the literature), ``linear`` or ``none``."""
    try:
        return RAMPS[kind](current, length)
    except KeyError:
        raise ValueError(f"unknown ramp {kind!r}: use one of {sorted(RAMPS)}") from None
