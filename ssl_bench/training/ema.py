"""Exponential-moving-average teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017).

theta'_t = beta * theta'_{t-1} + (1 - beta) * theta_t  (CoraNet Eq. 9), with the usual warm-up
beta_t = min(1 - 1 / (t + 1), beta) so that the early teacher follows the student closely.
BatchNorm running statistics are copied from the student (buffers are not averaged), as in the Mean Teacher
and UA-MT reference code.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher(nn.Module):
    """A frozen copy of ``student`` updated by :meth:`update` after each optimiser step.

    The teacher's parameters have ``requires_grad=False`` so the optimiser and gradient checks ignore them; its
    state is part of the owning method's ``state_dict`` (checkpointed and resumed with it).
    """

    def __init__(self, student: nn.Module, decay: float = 0.99, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(student)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimiser step ``step`` (0-based)."""
        return min(1.0 - 1.0 / (step + 2), self.decay) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        beta = self.decay_at(step)
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.mul_(beta).add_(s.detach(), alpha=1.0 - beta)
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
