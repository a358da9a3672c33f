"""Exponential-moving-average teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017).

theta'_t = beta_t * theta'_{t-1} + (1 - beta_t) * theta_t  (CoraNet Eq. 9 with a constant beta_t = beta), or with
the warm-up of the Mean Teacher, UA-MT and SSL4MIS code, beta_t = min(1 - 1 / (t + 1), beta) where t is the 0-based
optimiser step of the update: beta_0 = 0, so the first update copies the student (yulequan/UA-MT
``code/train_LA_meanteacher_certainty_unlabel.py`` and HiLab-git/SSL4MIS ``code/train_mean_teacher_2D.py``,
``update_ema_variables(model, ema_model, alpha, iter_num)`` called before ``iter_num`` is incremented).
BatchNorm running statistics are copied from the student (buffers are not averaged), as in the Mean Teacher
and UA-MT reference code. :meth:`EMATeacher.reset_to` hands a stage's student to the teacher (CoraNet's
Algorithm 1, line 3; BCP's self-training stage).
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
        """beta_t of the update after optimiser step ``step`` (0-based): min(1 - 1/(t + 1), beta), or beta."""
        return min(1.0 - 1.0 / (step + 1), self.decay) if self.warmup else self.decay

    @torch.no_grad()
    def reset_to(self, student: nn.Module) -> None:
        """theta' <- theta: the teacher becomes a copy of ``student`` (parameters and buffers)."""
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.copy_(s.detach())
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        beta = self.decay_at(step)
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.mul_(beta).add_(s.detach(), alpha=1.0 - beta)
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
