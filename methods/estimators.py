"""Uncertainty estimators: the certain/uncertain masks of UA-MT (and CoraNet's Table VI baselines).

Every estimator turns a network and a batch into an :class:`~ssl_bench.core.uncertainty.UncertaintyMap` (mean class
probabilities, a certain mask, a score), without gradients, leaving the network's modes and BatchNorm running
statistics exactly as it found them. Options are set through the owning method's ``params.estimator_options``.

* ``entropy`` — UA-MT (Yu et al., "Uncertainty-aware Self-ensembling Model for Semi-supervised 3D Left Atrium
  Segmentation", MICCAI 2019, arXiv:1907.07034; github.com/yulequan/UA-MT): T = 8 passes with input noise
  clamp(N(0, 0.1^2), -0.2, 0.2) and dropout, predictive entropy of the mean softmax, certain where the entropy is
  below a threshold ramped from 0.75 to 1 times H_max with sigmoid_rampup over the stage. ``entropy_max="ln-k"``
  (default) uses H_max = ln K, the entropy's maximum; ``"ln-2"`` is the reference code, which uses ln 2 even for
  4 classes (SSL4MIS ACDC) so that the threshold sits at 0.375-0.5 of the maximum there.
* ``softmax-threshold`` — one deterministic pass, certain where the max softmax probability is >= a threshold
  (CoraNet Fig. 3 compares 0.5, 0.7, 0.9; default 0.7).
* ``none`` — everything certain: the "no mask" control (UA-MT issue #3 found no significant effect of the mask).
* ``mc-dropout`` — Gal & Ghahramani, ICML 2016: T = 50 passes with dropout p = 0.5 on the bottleneck and last
  feature (CoraNet §IV-D), averaged, certain where the max probability is >= 0.8. Needs a backbone with dropout:
  ``required_dropout()`` tells the method to build one.
* ``tta`` — test-time augmentation (Wang et al., Neurocomputing 2019; CoraNet §IV-D 2D setting): T = 20 passes with
  a random horizontal flip and a random scale in [0.8, 1.1], each inverted back to the input grid, averaged,
  certain where the max probability is >= 0.8.
* ``aleatoric`` — Kendall & Gal, NeurIPS 2017: a ``logvar`` head; T = 10 logit samples f + exp(logvar / 2) * N(0, 1),
  mean softmax, certain where its max is >= 0.8. The head is trained with :meth:`AleatoricEstimator.head_loss`
  (the sampled-softmax likelihood), which UA-MT adds on labelled data; the mask is all UA-MT takes from it.

Deviations (all estimators):

* BatchNorm: ``bn="keep"`` (default) normalises as the layer's current mode does: UA-MT's teacher is in train mode
  during training, so its passes use batch statistics, as the reference teacher (kept in ``train()``) does; a
  caller that puts the net in eval mode (CoraNet) gets running statistics. Running statistics are never updated
  (the reference's teacher passes do update the teacher's, which its EMA never reads back anyway).
* ``tta``: scales are realised by resizing to the nearest size the backbone accepts (a multiple of its
  ``input_multiple``, 2**depth for the U-Net), so
  the scale set is discrete (e.g. 208..288 px for 256 px with depth 4); probabilities are resized back bilinearly
  (align_corners=True), which inverts the geometric transform exactly. In 3D (CoraNet §IV-D; REFERENCE §1.8) each
  pass is a random sub-crop (``crop_fraction`` of every axis, rounded down to the backbone's multiple) whose logits
  are put back in place; the sum is averaged per voxel over the passes that covered it together with one full pass
  (so every voxel is covered). The released code's crops were as large as its 96^3 inputs, so its 20 passes were
  identical; ours are smaller than the input along every axis longer than one multiple, and vary (tested). No
  flips or scaling in 3D.
* ``mc-dropout`` runs the encoder once and samples only the decoder's dropout layers per pass (``share_encoder``,
  default on; the U-Nets' dropout sits at the bottleneck and the last feature, so the encoder is deterministic
  and the passes' distribution is unchanged; tested against full passes).
* ``mc-dropout`` and ``tta`` average the passes' logits, then take the softmax (``average="logits"``), as
  CoraNet's released baselines do ("average their results", §IV-D); ``average="probs"`` is the predictive mean
  (mean softmax) of Gal & Ghahramani. Averaged probabilities are less confident, so with the 0.8 threshold the
  mask stays empty for longer early in training.
* ``aleatoric``: CoraNet §IV-D thresholds the samples' standard deviation (< 0.001); the default here is the same
  max-probability rule as mc-dropout and tta (0.8), ``std_threshold`` gives the paper's rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.core.backbone import HeadSpec, SegNet
from ssl_bench.core.method import StepInfo
from ssl_bench.core.registry import ESTIMATORS
from ssl_bench.core.uncertainty import UncertaintyEstimator, UncertaintyMap
from ssl_bench.training.consistency import (
    AVERAGES,
    BN_MODES,
    average_passes,
    has_dropout,
    mean_probs,
    predictive_entropy,
    repeat_batch,
    stochastic_mode,
)
from ssl_bench.training.ramps import sigmoid_rampup

ENTROPY_MAX = ("ln-k", "ln-2")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


class _Estimator(UncertaintyEstimator):
    """Common pieces: option validation, ``required_dropout`` (0: none needed), confidence masks."""

    def __init__(self, cfg: Any = None, num_classes: int = 2) -> None:
        super().__init__(cfg, num_classes)
        bn = getattr(self.cfg, "bn", "keep")
        _check(bn in BN_MODES, f"estimator option bn must be one of {BN_MODES}, got {bn!r}")
        passes = getattr(self.cfg, "T", 1)
        _check(passes >= 1, f"estimator option T must be >= 1, got {passes}")
        threshold = getattr(self.cfg, "threshold", 0.5)
        _check(0.0 <= threshold <= 1.0, f"estimator option threshold must be in [0, 1], got {threshold}")
        average = getattr(self.cfg, "average", "probs")
        _check(average in AVERAGES, f"estimator option average must be one of {AVERAGES}, got {average!r}")

    def required_dropout(self) -> float:
        """Dropout probability the inspected backbone must be built with (0: none)."""
        return 0.0

    def _confident(self, prob: torch.Tensor) -> UncertaintyMap:
        top = prob.amax(1)
        return UncertaintyMap(prob=prob, certain=top >= self.cfg.threshold, score=1.0 - top)


# -- entropy (UA-MT) ----------------------------------------------------------------------------------------------


@dataclass
class EntropyConfig:
    """Options of the ``entropy`` estimator (defaults: UA-MT)."""

    #: stochastic passes
    T: int = 8
    #: std and clamp of the Gaussian input noise of each pass
    noise_std: float = 0.1
    noise_clip: float | None = 0.2
    #: switch the net's dropout layers on during the passes (the reference teacher runs with dropout)
    dropout: bool = True
    #: threshold = (threshold_start + (threshold_end - threshold_start) * sigmoid_rampup) * H_max
    threshold_start: float = 0.75
    threshold_end: float = 1.0
    #: H_max: "ln-k" (ln of the number of classes, the entropy's maximum) or "ln-2" (the reference code)
    entropy_max: str = "ln-k"
    #: fraction of the stage over which the threshold ramps (the reference: the whole run)
    rampup: float = 1.0
    #: BatchNorm during the passes: "keep" (the net's mode), "batch", "running"
    bn: str = "keep"
    #: passes batched into one forward
    per_forward: int = 4


@ESTIMATORS.register("entropy")
class EntropyEstimator(_Estimator):
    """UA-MT: predictive entropy of T noisy (+ dropout) passes below a ramped threshold (0.75 -> 1) x ln K."""

    Config = EntropyConfig

    def __init__(self, cfg: Any = None, num_classes: int = 2) -> None:
        super().__init__(cfg, num_classes)
        c = self.cfg
        _check(c.entropy_max in ENTROPY_MAX, f"entropy_max must be one of {ENTROPY_MAX}, got {c.entropy_max!r}")
        _check(c.rampup >= 0 and c.noise_std >= 0, "entropy estimator: need rampup >= 0 and noise_std >= 0")

    @property
    def entropy_max(self) -> float:
        return math.log(self.num_classes if self.cfg.entropy_max == "ln-k" else 2)

    def threshold(self, step: StepInfo | None) -> float:
        """Entropy threshold (nats) at ``step`` (the end value when ``step`` is None)."""
        c = self.cfg
        t = 1.0 if step is None else sigmoid_rampup(step.stage_step, c.rampup * step.stage_steps)
        return (c.threshold_start + (c.threshold_end - c.threshold_start) * t) * self.entropy_max

    @torch.no_grad()
    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        c = self.cfg
        prob = mean_probs(
            net,
            x,
            c.T,
            noise_std=c.noise_std,
            noise_clip=c.noise_clip,
            dropout=c.dropout,
            bn=c.bn,
            per_forward=c.per_forward,
        )
        entropy = predictive_entropy(prob)
        return UncertaintyMap(prob=prob, certain=entropy < self.threshold(step), score=entropy)


# -- softmax threshold / none -------------------------------------------------------------------------------------


@dataclass
class SoftmaxThresholdConfig:
    """Options of the ``softmax-threshold`` estimator."""

    #: certain where the max softmax probability is >= threshold (CoraNet Fig. 3: 0.5, 0.7, 0.9)
    threshold: float = 0.7
    #: BatchNorm during the pass: "keep" (the net's mode), "batch", "running"
    bn: str = "keep"


def _single_pass(net: nn.Module, x: torch.Tensor, bn: str) -> torch.Tensor:
    with torch.no_grad(), stochastic_mode(net, dropout=False, bn=bn):
        return net(x).float().softmax(1)


@ESTIMATORS.register("softmax-threshold")
class SoftmaxThresholdEstimator(_Estimator):
    """Confidence mask: certain where the max softmax probability of one pass is >= threshold (default 0.7)."""

    Config = SoftmaxThresholdConfig

    @torch.no_grad()
    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        return self._confident(_single_pass(net, x, self.cfg.bn))


@dataclass
class NoMaskConfig:
    """Options of the ``none`` estimator."""

    #: BatchNorm during the pass that gives the probabilities: "keep", "batch", "running"
    bn: str = "keep"


@ESTIMATORS.register("none")
class NoMaskEstimator(_Estimator):
    """No mask: every pixel is certain (the control run; UA-MT issue #3)."""

    Config = NoMaskConfig
    marks_uncertain = False

    @torch.no_grad()
    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        prob = _single_pass(net, x, self.cfg.bn)
        return UncertaintyMap(prob=prob, certain=torch.ones_like(prob[:, 0], dtype=torch.bool), score=None)


# -- MC dropout ---------------------------------------------------------------------------------------------------


@dataclass
class MCDropoutConfig:
    """Options of the ``mc-dropout`` estimator (defaults: CoraNet §IV-D)."""

    #: stochastic passes with dropout on
    T: int = 50
    #: dropout probability the backbone must be built with (bottleneck and last feature)
    p: float = 0.5
    #: certain where the max of the mean softmax is >= threshold
    threshold: float = 0.8
    #: BatchNorm during the passes: "keep" (the net's mode), "batch", "running"
    bn: str = "keep"
    #: "logits": softmax of the mean logits (CoraNet's released baseline); "probs": mean softmax (Gal's predictive
    #: mean)
    average: str = "logits"
    #: passes batched into one forward
    per_forward: int = 10
    #: run the encoder once and sample only the decoder's dropout (bottleneck + last feature) per pass: the same
    #: distribution as full passes with ~40 % fewer FLOPs on the U-Nets; used when the backbone exposes
    #: encode/decode and its encoder holds no dropout, else full passes
    share_encoder: bool = True


def _encoder_is_deterministic(net: nn.Module) -> bool:
    """Whether ``net`` splits as ``decode(encode(x))`` with no dropout layer inside its encoder modules."""
    names = getattr(net, "encoder_modules", ())
    if not names or not getattr(net, "decoder_channels", ()):
        return False
    return not any(has_dropout(getattr(net, n)) for n in names)


def decoder_mean_probs(
    net: SegNet, x: torch.Tensor, passes: int, *, bn: str, per_forward: int, average: str
) -> torch.Tensor:
    """:func:`mean_probs` with dropout for a net whose encoder is deterministic: encoder features once, then
    ``passes`` decoder passes (``per_forward`` at a time, features repeated along the batch). ``[B, K, *S]``."""
    with torch.no_grad(), stochastic_mode(net, dropout=True, bn=bn):
        feats = net.encode(x)
        return average_passes(
            lambda g: net.decode([repeat_batch(f, g) for f in feats]),
            passes,
            x.shape[0],
            per_forward=per_forward,
            average=average,
        )


@ESTIMATORS.register("mc-dropout")
class MCDropoutEstimator(_Estimator):
    """MC dropout: T = 50 dropout passes (p = 0.5), logits averaged; certain where the max probability is >= 0.8."""

    Config = MCDropoutConfig

    def __init__(self, cfg: Any = None, num_classes: int = 2) -> None:
        super().__init__(cfg, num_classes)
        _check(0.0 < self.cfg.p < 1.0, f"mc-dropout: p must be in (0, 1), got {self.cfg.p}")

    def required_dropout(self) -> float:
        return float(self.cfg.p)

    @torch.no_grad()
    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        if not has_dropout(net):
            raise ValueError(
                "the mc-dropout estimator needs a backbone built with dropout > 0 (its dropout layers are sampled); "
                "methods that take --estimator build one from required_dropout(), otherwise set model.dropout"
            )
        c = self.cfg
        if c.share_encoder and _encoder_is_deterministic(net):
            prob = decoder_mean_probs(net, x, c.T, bn=c.bn, per_forward=c.per_forward, average=c.average)
        else:
            prob = mean_probs(net, x, c.T, dropout=True, bn=c.bn, per_forward=c.per_forward, average=c.average)
        return self._confident(prob)


# -- test-time augmentation ---------------------------------------------------------------------------------------


@dataclass
class TTAConfig:
    """Options of the ``tta`` estimator (defaults: CoraNet §IV-D, 2D setting)."""

    #: augmented passes
    T: int = 20
    #: probability of a horizontal flip (2D)
    flip_p: float = 0.5
    #: scale range of the 2D passes (sizes rounded to a multiple the backbone accepts)
    scale_min: float = 0.8
    scale_max: float = 1.1
    #: 3D: edge of the random crops as a fraction of the input's (rounded to a multiple the backbone accepts)
    crop_fraction: float = 0.75
    #: certain where the max of the mean prediction is >= threshold
    threshold: float = 0.8
    #: "logits": softmax of the mean (inverted) logits (CoraNet's released baseline); "probs": mean softmax
    average: str = "logits"
    #: BatchNorm during the passes: "keep" (the net's mode), "batch", "running"
    bn: str = "keep"


def size_multiple(net: nn.Module) -> int:
    """Spatial multiple the backbone needs (``SegNet.input_multiple``; 32 for other modules)."""
    return int(getattr(net, "input_multiple", 32))


def scaled_size(size: tuple[int, ...], scale: float, multiple: int) -> tuple[int, ...]:
    """``size * scale`` rounded to the nearest positive multiple of ``multiple``, per axis."""
    return tuple(max(multiple, multiple * round(s * scale / multiple)) for s in size)


def resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, H, W]`` with aligned corners (exact for affine intensity ramps; no-op if equal)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


@ESTIMATORS.register("tta")
class TTAEstimator(_Estimator):
    """Test-time augmentation: T = 20 passes (2D: flip + scale 0.8-1.1; 3D: random crops), inverted; max p >= 0.8."""

    Config = TTAConfig

    def __init__(self, cfg: Any = None, num_classes: int = 2) -> None:
        super().__init__(cfg, num_classes)
        c = self.cfg
        _check(
            0 < c.scale_min <= c.scale_max, f"tta: need 0 < scale_min <= scale_max, got {c.scale_min}, {c.scale_max}"
        )
        _check(0 <= c.flip_p <= 1, f"tta: flip_p must be in [0, 1], got {c.flip_p}")
        _check(0 < c.crop_fraction <= 1, f"tta: crop_fraction must be in (0, 1], got {c.crop_fraction}")

    # -- 2D: flip + scale, exactly inverted -------------------------------------------------------------------------

    def sample(self, x: torch.Tensor, multiple: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """One random 2D transform: (flipped tensor dims, spatial size a multiple of ``multiple``)."""
        c = self.cfg
        flips = (x.ndim - 1,) if float(torch.rand(())) < c.flip_p else ()
        scale = c.scale_min + (c.scale_max - c.scale_min) * float(torch.rand(()))
        return flips, scaled_size(tuple(x.shape[2:]), scale, multiple)

    @staticmethod
    def forward_transform(x: torch.Tensor, flips: tuple[int, ...], size: tuple[int, ...]) -> torch.Tensor:
        return resize(x.flip(flips) if flips else x, size)

    @staticmethod
    def inverse_transform(y: torch.Tensor, flips: tuple[int, ...], spatial: tuple[int, ...]) -> torch.Tensor:
        y = resize(y, spatial)
        return y.flip(flips) if flips else y

    # -- 3D: random crops put back in place -------------------------------------------------------------------------

    def sample_crop(self, spatial: tuple[int, ...], multiple: int) -> tuple[slice, ...]:
        """A random sub-box of ``spatial``, uniformly placed: each edge ``crop_fraction`` of the input's, rounded down
        to a multiple of ``multiple``, at least one multiple and smaller than the input wherever the input is longer
        than one multiple (an axis of at most one multiple is taken whole)."""
        box = []
        for s in spatial:
            edge = s
            if s > multiple:
                fit = math.floor(s * self.cfg.crop_fraction / multiple)
                edge = multiple * max(1, min(fit, math.ceil(s / multiple) - 1))
            start = int(torch.randint(0, s - edge + 1, ()))
            box.append(slice(start, start + edge))
        return tuple(box)

    def _passes_3d(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean over one full pass and T random crops of the logits (or probabilities) per voxel ``[B, K, *S]``."""
        probs = self.cfg.average == "probs"

        def out(inp: torch.Tensor) -> torch.Tensor:
            y = net(inp).float()
            return y.softmax(1) if probs else y

        total = out(x)
        count = torch.ones_like(total[:1, :1])
        multiple = size_multiple(net)
        for _ in range(self.cfg.T):
            box = (Ellipsis, *self.sample_crop(tuple(x.shape[2:]), multiple))
            total[box] += out(x[box])
            count[box] += 1
        return total / count

    def _passes_2d(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean over T flipped and rescaled passes, each inverted, of the logits (or probabilities) ``[B, K, H, W]``."""
        multiple, spatial = size_multiple(net), tuple(x.shape[2:])
        total = torch.zeros(())
        for _ in range(self.cfg.T):
            flips, size = self.sample(x, multiple)
            out = net(self.forward_transform(x, flips, size)).float()
            total = total + self.inverse_transform(
                out.softmax(1) if self.cfg.average == "probs" else out, flips, spatial
            )
        return total / self.cfg.T

    @torch.no_grad()
    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        with stochastic_mode(net, dropout=False, bn=self.cfg.bn):
            mean = self._passes_3d(net, x) if x.ndim == 5 else self._passes_2d(net, x)
        return self._confident(mean if self.cfg.average == "probs" else mean.softmax(1))


# -- aleatoric ----------------------------------------------------------------------------------------------------


@dataclass
class AleatoricConfig:
    """Options of the ``aleatoric`` estimator."""

    #: logit samples (CoraNet §IV-D: 20 in 2D, 10 in 3D)
    T: int = 10
    #: certain where the max of the mean softmax is >= threshold
    threshold: float = 0.8
    #: if set, certain where the samples' std of the probabilities (max over classes) is < std_threshold
    #: instead (CoraNet §IV-D: 0.001)
    std_threshold: float | None = None
    #: BatchNorm during the pass: "keep" (the net's mode), "batch", "running"
    bn: str = "keep"


LOGVAR_CLAMP = 10.0


@ESTIMATORS.register("aleatoric")
class AleatoricEstimator(_Estimator):
    """Aleatoric (Kendall & Gal 2017): logvar head, T = 10 logit samples, certain where max mean p >= 0.8."""

    Config = AleatoricConfig
    head = "logvar"

    def required_heads(self) -> list[HeadSpec]:
        return [HeadSpec(self.head, self.num_classes, "linear")]

    def sample_probs(self, logits: torch.Tensor, logvar: torch.Tensor, samples: int) -> torch.Tensor:
        """``[T, B, K, *S]`` softmax of ``logits + exp(logvar / 2) * eps``."""
        std = (0.5 * logvar.clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)).exp()
        eps = torch.randn((samples, *logits.shape), device=logits.device, dtype=logits.dtype)
        return (logits.unsqueeze(0) + std.unsqueeze(0) * eps).softmax(2)

    def head_loss(self, heads: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Kendall & Gal's classification likelihood: ``-mean log (1/T sum_t softmax(f + sigma eps_t)[y])``; trains
        the logvar head (and the features) on labelled pixels."""
        logits, logvar = heads["main"].float(), heads[self.head].float()
        std = (0.5 * logvar.clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)).exp()
        eps = torch.randn((self.cfg.T, *logits.shape), device=logits.device, dtype=logits.dtype)
        log_p = (logits.unsqueeze(0) + std.unsqueeze(0) * eps).log_softmax(2)  # [T, B, K, *S]
        idx = target.long().unsqueeze(0).unsqueeze(2).expand(self.cfg.T, -1, 1, *target.shape[1:])
        log_py = log_p.gather(2, idx).squeeze(2)  # [T, B, *S]
        return -(torch.logsumexp(log_py, dim=0) - math.log(self.cfg.T)).mean()

    @torch.no_grad()
    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        if self.head not in getattr(net, "extra_heads", {}):
            raise ValueError("the aleatoric estimator needs a backbone with a 'logvar' head (see required_heads())")
        with stochastic_mode(net, dropout=False, bn=self.cfg.bn):
            out = net.forward_heads(x, [self.head])
        samples = self.sample_probs(out["main"].float(), out[self.head].float(), self.cfg.T)
        prob = samples.mean(0)
        if self.cfg.std_threshold is None:
            return self._confident(prob)
        std = samples.std(0, unbiased=False).amax(1)
        return UncertaintyMap(prob=prob, certain=std < self.cfg.std_threshold, score=std)
