"""The Method interface: a method owns its networks and turns batches into named losses.

Everything else (data streams, optimiser, checkpoints, evaluation) is the trainer's job, so a method file holds
only the maths of its paper. Contract (checked by ``ssl-bench check``):

* ``training_step(batch_l, batch_u, step)`` returns a dict of scalar tensors with key ``"loss"`` (what is
  optimised); every other key is logged. Keys starting with ``unsup/`` are unsupervised loss terms: each must
  have a non-zero gradient with respect to the student's parameters (this catches a consistency loss computed
  on detached outputs, a bug that shipped in a well-known SSL benchmark).
* ``predict(x)`` returns logits ``[B, K, *spatial]`` of the model used at test time.
* hooks: ``after_optimizer_step`` (EMA teachers), ``on_epoch_end`` (Temporal Ensembling targets, periodic
  pseudo-label refresh), ``stages()`` (e.g. CoraNet: labelled pre-training, then self-training).
* state: networks and buffers are in ``state_dict()``; anything else goes through ``extra_state``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ssl_bench.core.backbone import HeadSpec, SegNet
from ssl_bench.core.data import TaskSpec


@dataclass
class Batch:
    """A batch of one stream.

    Attributes:
        image: ``[B, C, H, W]`` (2D) or ``[B, C, D, H, W]`` (3D) float.
        label: ``[B, H, W]`` / ``[B, D, H, W]`` int64, or None for unlabelled batches.
        index: ``[B]`` int64, position of each sample in its stream's dataset (for per-sample state such as
            Temporal Ensembling targets or stored pseudo-labels).
        aug: ``[B, 3]`` float32 augmentation applied to each sample (rot90 count, flip, rotation angle), or None;
            stored per-sample maps are brought into the batch's frame with
            :func:`ssl_bench.training.augment.apply_augment` (rotations: lossy, nearest neighbour).
        crop: ``[B, 3]`` int64 start offsets of random 3D crops, or None when samples are fixed views.
    """

    image: torch.Tensor
    label: torch.Tensor | None
    index: torch.Tensor
    aug: torch.Tensor | None = None
    crop: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        label = None if self.label is None else self.label.to(device, non_blocking=True)
        return Batch(self.image.to(device, non_blocking=True), label, self.index.to(device), self.aug, self.crop)


@dataclass(frozen=True)
class Stage:
    """A training phase. ``unlabeled``: whether unlabelled batches are drawn in it; ``iters_per_epoch``: this
    stage's epoch length (None: ``trainer.iters_per_epoch``, else one pass over the driving stream)."""

    name: str
    epochs: int
    unlabeled: bool = True
    iters_per_epoch: int | None = None


@dataclass(frozen=True)
class StepInfo:
    """Where training is: global ``step`` (0-based optimiser steps) of ``total_steps``; ``epoch`` counts over
    all stages; ``stage_step`` / ``stage_steps`` within the current stage (ramps use these)."""

    step: int
    epoch: int
    stage: str
    stage_step: int
    stage_steps: int
    total_steps: int
    steps_per_epoch: int


@dataclass(frozen=True)
class NoParams:
    """This method has no options of its own."""


@dataclass
class MethodContext:
    """What a method may use at construction: the task, the backbone factory, training lengths."""

    spec: TaskSpec
    backbone_factory: Callable[..., SegNet]
    epochs: int

    def build_backbone(self, extra_heads: Iterable[HeadSpec] = (), **overrides: Any) -> SegNet:
        """A new backbone for this task, optionally with extra heads (see :class:`~.backbone.HeadSpec`)."""
        return self.backbone_factory(extra_heads=tuple(extra_heads), **overrides)


@dataclass
class EpochData:
    """Given to ``on_epoch_end``: iterate the (un-augmented) unlabelled training images in fixed order.

    ``hidden_labels_u`` ``[N_u, *S]`` are the true labels of the unlabelled images, for *analysis only*
    (pseudo-label quality, paper Fig. 3/4); a method must never train on them. None where unknown.
    """

    iterate_unlabeled: Callable[[int], Iterator[Batch]]
    num_unlabeled: int
    device: torch.device
    hidden_labels_u: torch.Tensor | None = None


class Method(nn.Module):
    """Base class of method plugins (register with ``@METHODS.register(name)``).

    Class attributes:
        Config: the method's options dataclass (``params`` section of the run config).
        config_prefix: extra alias for ``--set <prefix>.key=value`` (e.g. ``"coranet"``).
        uses_unlabeled: False for supervised-only methods (no unlabelled stream is drawn).
        uses_all_labels: True for the fully supervised upper bound (the labelled budget is ignored).
        presets: per-preset config overrides (dotted keys), applied after the dataset's preset.
        dims: the data dimensionalities the method supports.
    """

    Config: ClassVar[type] = NoParams
    config_prefix: ClassVar[str | None] = None
    uses_unlabeled: ClassVar[bool] = True
    uses_all_labels: ClassVar[bool] = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    dims: ClassVar[tuple[int, ...]] = (2, 3)

    student: SegNet

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else self.Config()
        self.ctx = ctx
        self.spec = ctx.spec

    # -- schedule -------------------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        """Training phases; default one stage of ``trainer.epochs`` epochs."""
        return [Stage("train", self.ctx.epochs, unlabeled=self.uses_unlabeled)]

    # -- training -------------------------------------------------------------------------------------------------

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_stage_start(self, stage: Stage, step: StepInfo) -> None:
        """Called before the first step of every stage (``step.stage_step == 0``), also when a resumed run starts
        exactly there: e.g. the hand-over of a pre-trained student to the teacher."""

    def after_optimizer_step(self, step: StepInfo) -> None:
        """Called after every optimiser step (e.g. EMA teacher update)."""

    def on_epoch_end(self, epoch: int, stage: Stage, data: EpochData) -> dict[str, float] | None:
        """Called at the end of every epoch (``epoch`` counts over all stages, 0-based), before validation.

        May return numbers to log (a ``{"type": "epoch"}`` record in ``metrics.jsonl``).
        """
        return None

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates (default: those with ``requires_grad``; EMA teachers have none)."""
        return (p for p in self.parameters() if p.requires_grad)

    # -- inference ------------------------------------------------------------------------------------------------

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time logits ``[B, K, *spatial]`` (default: the student's main head)."""
        return self.student(x)

    def inference_module(self) -> nn.Module:
        """The network ``predict`` uses (its parameters are counted as inference parameters)."""
        return self.student

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters during training vs parameters used at test time (paper §III-D2)."""
        train = sum(p.numel() for p in self.trainable_parameters())
        net = self.inference_module()
        infer = net.inference_parameters() if isinstance(net, SegNet) else sum(p.numel() for p in net.parameters())
        return {"train": int(train), "inference": int(infer)}

    # -- state ----------------------------------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor-module state to checkpoint (e.g. pseudo-label bookkeeping)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    @classmethod
    def check_config(cls, cfg: Any, dims: int) -> None:
        """Reject run configurations the method cannot train with (raise ``ValueError`` with a fix); called before
        anything is built. ``cfg`` is the whole :class:`~ssl_bench.core.config.RunConfig`, ``dims`` the data's."""

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else cls.__name__

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Config)]
