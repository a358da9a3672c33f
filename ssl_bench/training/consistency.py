"""Consistency-regularisation pieces shared by the SSL baselines (written once, used by every method file).

* losses: :func:`softmax_mse` (Laine & Aila; Mean Teacher; UA-MT), :func:`kl_from_logits`
  (VAT), :func:`predictive_entropy`;
* schedule: :func:`ramped_weight` (the unsupervised weight w(t) as a function of the stage's progress);
* stochastic passes: :func:`add_noise` (UA-MT's clamped Gaussian input noise), :func:`random_dihedral` (random
  rot90/flip with an exact inverse, via :func:`ssl_bench.training.augment.apply_augment`), :func:`stochastic_mode`
  (dropout on/off and BatchNorm mode for a pass, never touching BN running statistics), :func:`mean_probs`
  (mean softmax of T stochastic passes);
* :class:`ConsistencyConfig` / :class:`ConsistencyMethod`: the base of the consistency-type methods (supervised
  loss, ramped weight, labelled/unlabelled forwards, the ``loss = sup + w * unsup`` bookkeeping).

Shapes: logits/probabilities ``[B, K, *S]``, masks ``[B, *S]``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from ssl_bench.core.backbone import HeadSpec
from ssl_bench.core.method import Batch, Method, MethodContext, StepInfo
from ssl_bench.training.augment import apply_augment
from ssl_bench.training.losses import check_supervised_loss, masked_mean, supervised_loss
from ssl_bench.training.ramps import RAMPS, ramp

BN_MODES = ("keep", "batch", "running")
AVERAGES = ("probs", "logits")

# -- losses -------------------------------------------------------------------------------------------------------


def softmax_mse(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over classes of ``(softmax(logits) - target)^2``, averaged over the (masked) pixels.

    ``target`` is a probability map (detach it for a teacher target; keep its graph for the symmetric Pi-model).
    With a mask this is UA-MT's ``sum(mask * dist) / (2 |mask|)`` for K = 2 (its channel sum divided by 2).
    """
    return masked_mean((logits.softmax(1) - target).pow(2).mean(1), mask)


def kl_from_logits(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(target_logits) || softmax(logits))`` summed over classes, averaged over pixels (VAT's LDS)."""
    log_p = F.log_softmax(target_logits, dim=1)
    log_q = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def predictive_entropy(prob: torch.Tensor) -> torch.Tensor:
    """``-sum_k p_k ln p_k`` in nats, ``[B, K, *S]`` -> ``[B, *S]`` (0 ln 0 = 0)."""
    return -(prob * prob.clamp_min(1e-12).log()).sum(1)


# -- schedule ------------------------------------------------------------------------------------------------------


def ramped_weight(
    weight: float,
    step: StepInfo,
    rampup: float,
    kind: str = "sigmoid",
    delay: float = 0.0,
    levels: int = 0,
    mute: float = 0.0,
) -> float:
    """``weight * ramp(t)`` with ``t`` the stage progress: 0 during the first ``delay`` fraction of the stage, then
    ramped over the next ``rampup`` fraction (``kind``: sigmoid = exp(-5 (1 - t)^2), linear, none).

    ``levels > 0`` evaluates the ramp on a staircase of ``levels`` steps over the ramp (SSL4MIS and UA-MT ramp
    ``iter // 150`` over 200 and 40 units: ``levels`` 200 and 40 with ``rampup`` 1). ``mute`` zeroes the weight during
    the first fraction of the stage *without* shifting the ramp (SSL4MIS's Mean Teacher: iterations < 1000 of 30000).
    """
    eps = 1e-9  # fractions of the stage: 7/25 x 25 is 7.000000000000001, and step 7 is not muted
    if step.stage_step < mute * step.stage_steps - eps:
        return 0.0
    start = delay * step.stage_steps
    if step.stage_step < start - eps:
        return 0.0
    length = rampup * step.stage_steps
    current = step.stage_step - start
    if levels > 0 and length > 0:  # staircase: current // (length / levels) of `levels` units
        unit = length / levels
        return float(weight * ramp(kind, math.floor(current / unit + 1e-9), levels))
    return float(weight * ramp(kind, current, length))


# -- stochastic passes ---------------------------------------------------------------------------------------------


def add_noise(x: torch.Tensor, std: float, clip: float | None = None) -> torch.Tensor:
    """``x + clamp(N(0, std^2), -clip, clip)`` (UA-MT: std 0.1, clip 0.2); ``x`` itself when ``std`` is 0."""
    if std <= 0:
        return x
    noise = torch.randn_like(x) * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    return x + noise


def random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """Random per-sample ``aug [B, 2]`` = (rot90 count, horizontal flip) for :func:`apply_augment` on ``x``'s last
    two axes (only 0/180 degrees when they differ in size). Uses the global torch RNG."""
    n = x.shape[0]
    k = torch.randint(0, 4, (n,))
    if x.shape[-1] != x.shape[-2]:
        k = 2 * (k % 2)
    return torch.stack([k, torch.randint(0, 2, (n,))], dim=1)


def has_dropout(net: nn.Module) -> bool:
    """Whether ``net`` has a dropout layer with p > 0."""
    return any(isinstance(m, _DropoutNd) and m.p > 0 for m in net.modules())


@contextlib.contextmanager
def stochastic_mode(net: nn.Module, *, dropout: bool | None, bn: str = "keep") -> Iterator[nn.Module]:
    """Run passes of ``net`` with dropout switched on/off (None: as it is) and BatchNorm in mode ``bn``.

    ``bn``: ``"batch"`` normalises with the batch's statistics, ``"running"`` with the running statistics,
    ``"keep"`` does what the layer's current mode does (train: batch, eval: running). BatchNorm running
    statistics are never updated inside the context; every module's mode is restored on exit.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    modes = [(m, m.training) for m in net.modules()]
    tracks = [(m, m.track_running_stats) for m in net.modules() if isinstance(m, _BatchNorm)]
    try:
        for m, _ in tracks:
            batch_stats = bn == "batch" or (bn == "keep" and m.training)
            m.train(batch_stats)
            if batch_stats:
                m.track_running_stats = False  # batch statistics, running buffers left untouched
        if dropout is not None:
            for m in net.modules():
                if isinstance(m, _DropoutNd):
                    m.train(dropout)
        yield net
    finally:
        for m, training in modes:
            m.training = training
        for m, track in tracks:
            m.track_running_stats = track


def repeat_batch(x: torch.Tensor, times: int) -> torch.Tensor:
    """``[B, ...]`` -> ``[times * B, ...]``: ``times`` copies of the batch, one after the other."""
    return x.repeat(times, *([1] * (x.ndim - 1)))


def average_passes(
    run_group: Callable[[int], torch.Tensor], passes: int, batch: int, *, per_forward: int = 4, average: str = "probs"
) -> torch.Tensor:
    """Mean prediction ``[B, K, *S]`` (probabilities) of ``passes`` stochastic passes, ``per_forward`` at a time:
    ``run_group(g)`` returns the logits ``[g * B, K, *S]`` of ``g`` passes stacked along the batch.

    ``average``: ``"probs"`` = mean of the passes' softmax (the predictive mean); ``"logits"`` = softmax of the mean
    logits (CoraNet's released MC-dropout/TTA baselines).
    """
    if passes < 1:
        raise ValueError(f"need at least one pass, got {passes}")
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    total: torch.Tensor | None = None
    done = 0
    while done < passes:
        g = min(max(1, per_forward), passes - done)
        out = run_group(g).float()
        out = out.softmax(1) if average == "probs" else out
        s = out.reshape(g, batch, *out.shape[1:]).sum(0)
        total = s if total is None else total + s
        done += g
    assert total is not None
    mean = total / passes
    return mean if average == "probs" else mean.softmax(1)


def mean_probs(
    net: nn.Module,
    x: torch.Tensor,
    passes: int,
    *,
    noise_std: float = 0.0,
    noise_clip: float | None = None,
    dropout: bool | None = True,
    bn: str = "keep",
    per_forward: int = 4,
    average: str = "probs",
) -> torch.Tensor:
    """:func:`average_passes` of ``net`` on ``x`` ``[B, C, *S]`` with fresh input noise and dropout masks per pass
    (UA-MT runs 2 passes per forward). No gradients; see :func:`stochastic_mode` for ``dropout`` and ``bn``."""
    with torch.no_grad(), stochastic_mode(net, dropout=dropout, bn=bn):
        return average_passes(
            lambda g: net(add_noise(repeat_batch(x, g), noise_std, noise_clip)),
            passes,
            x.shape[0],
            per_forward=per_forward,
            average=average,
        )


# -- base of the consistency methods -------------------------------------------------------------------------------


@dataclass
class ConsistencyConfig:
    """Options shared by the consistency-type SSL baselines (each method adds its own)."""

    #: supervised loss (training.losses.SUPERVISED_LOSSES): "ce" (the CoraNet paper's L_ce), "ce+dice-ssl4mis"
    #: (0.5 (CE + Dice), SSL4MIS's Dice), "ce+dice-uamt" (UA-MT's foreground Dice), "ce+dice" (linear Dice, ours)
    loss: str = "ce"
    #: maximum weight w_max of the unsupervised term (loss = sup + w(t) * unsup)
    weight: float = 0.1
    #: fraction of the stage over which w(t) ramps up to `weight` (preset-independent ramp length)
    rampup: float = 0.4
    #: ramp shape: "sigmoid" (exp(-5 (1 - t)^2), Laine & Aila), "linear", "none"
    ramp: str = "sigmoid"
    #: fraction of the stage before the ramp starts (w = 0 before)
    delay: float = 0.0
    #: ramp evaluated on a staircase of this many steps (0: continuous); SSL4MIS: 200 (iter // 150 of 30000)
    ramp_levels: int = 0
    #: fraction of the stage with w = 0, the ramp not shifted (SSL4MIS Mean Teacher: 1000 / 30000 iterations)
    mute: float = 0.0
    #: dropout of the U-Net bottleneck and last feature (None: model.dropout)
    dropout: float | None = None
    #: one student forward over labelled + unlabelled images together (the UA-MT/SSL4MIS code; BatchNorm statistics
    #: over both) instead of one per batch (false); see ConsistencyMethod.forward_split
    joint_bn: bool = True


class ConsistencyMethod(Method):
    """Shared machinery: a student backbone, the supervised loss, the ramped unsupervised weight."""

    Config = ConsistencyConfig

    def __init__(
        self, cfg: Any, ctx: MethodContext, extra_heads: Iterable[HeadSpec] = (), min_dropout: float = 0.0
    ) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        check_supervised_loss(c.loss)
        if c.ramp not in RAMPS:
            raise ValueError(f"params.ramp must be one of {sorted(RAMPS)}, got {c.ramp!r}")
        if c.weight < 0 or c.rampup < 0 or not 0 <= c.delay < 1 or not 0 <= c.mute < 1 or c.ramp_levels < 0:
            raise ValueError(
                "need params.weight >= 0, params.rampup >= 0, 0 <= params.delay < 1, 0 <= params.mute < 1 and "
                "params.ramp_levels >= 0"
            )
        if c.dropout is not None and not 0 <= c.dropout < 1:
            raise ValueError(f"params.dropout must be in [0, 1), got {c.dropout}")
        dropout = c.dropout
        if min_dropout > 0:  # e.g. an MC-dropout estimator needs dropout layers
            dropout = min_dropout if dropout is None else max(dropout, min_dropout)
        self.student = ctx.build_backbone(extra_heads, **({} if dropout is None else {"dropout": dropout}))

    def unsup_weight(self, step: StepInfo) -> float:
        c = self.cfg
        return ramped_weight(c.weight, step, c.rampup, c.ramp, c.delay, c.ramp_levels, c.mute)

    def supervised(self, logits_l: torch.Tensor, label: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Named supervised terms (``sup/total`` is the one optimised)."""
        assert label is not None, "labelled batch without labels"
        return supervised_loss(logits_l, label, self.cfg.loss)

    def forward_split(self, fn: Callable[[torch.Tensor], Any], x_l: torch.Tensor, x_u: torch.Tensor | None) -> Any:
        """``(fn(x_l), fn(x_u))`` (``fn(x_u)`` None if ``x_u`` is None); with ``joint_bn``, one call on the
        concatenation, split back (tensors, or dicts of tensors such as ``forward_heads``).

        One call is the default, as the references (UA-MT, SSL4MIS): BatchNorm's batch statistics then mix the
        images, so the supervised loss also acts through the unlabelled images' statistics. Measured on real ACDC
        (``benchmarks/acdc_bn_check.yaml``, ``--preset cpu-bench``, 3 seeds each) Mean Teacher scores the same with
        one call and with two within seed noise; on the smoke-size phantom (batches of 2 + 2) the joint call lost
        0.3-0.5 mean Dice at test time. The ``cpu`` preset keeps separate calls (``joint_bn=false``), the setting its
        committed records were made with.
        """
        if x_u is None:
            return fn(x_l), None
        if not self.cfg.joint_bn:
            return fn(x_l), fn(x_u)
        n = x_l.shape[0]
        out = fn(torch.cat([x_l, x_u]))
        if isinstance(out, dict):
            return {k: v[:n] for k, v in out.items()}, {k: v[n:] for k, v in out.items()}
        return out[:n], out[n:]

    def student_forward(self, batch_l: Batch, batch_u: Batch | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Student logits of the labelled and the unlabelled batch (see :meth:`forward_split`)."""
        return self.forward_split(self.student, batch_l.image, None if batch_u is None else batch_u.image)

    @staticmethod
    def combine(
        sup: dict[str, torch.Tensor], unsup: dict[str, torch.Tensor], weight: float, **logs: Any
    ) -> dict[str, torch.Tensor]:
        """``loss = sup/total + weight * sum(unsup terms)``; the terms are returned un-weighted (``unsup/*``) and the
        weight as ``weight/unsup`` so that a zero weight never hides a term from ``ssl-bench check``."""
        loss = sup["sup/total"]
        for term in unsup.values():
            loss = loss + weight * term
        out: dict[str, Any] = {"loss": loss, **sup, **unsup, "weight/unsup": torch.tensor(float(weight))}
        out.update({k: v if torch.is_tensor(v) else torch.tensor(float(v)) for k, v in logs.items()})
        return out

    def supervised_only(self, batch_l: Batch) -> dict[str, torch.Tensor]:
        """The step of a stage without unlabelled data."""
        sup = self.supervised(self.student(batch_l.image), batch_l.label)
        return {"loss": sup["sup/total"], **sup}


def align(stored: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-sample maps stored in the un-augmented frame (``[B, ...]``, already indexed by ``batch.index``) brought
    into the batch's augmented frame (exact for rot90/flip; a free rotation is resampled, lossy at the corners)."""
    return stored if batch.aug is None else apply_augment(stored, batch.aug)


def l2_normalize(d: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``d`` scaled to unit L2 norm per sample."""
    norm = d.flatten(1).norm(dim=1).clamp_min(eps)
    return d / norm.view(-1, *([1] * (d.ndim - 1)))
