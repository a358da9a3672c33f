"""Several segmentation networks trained jointly (co-training): the shared part of CPS and MC-Net.

* :func:`build_networks`: the task's backbone built once per entry of ``overrides`` (each an independent
  initialisation draw, in order), each override checked against the built network (an option the backbone ignores
  is an error, not a silent no-op);
* :class:`CoTrainingMethod`: network 0 is ``student`` (what ``predict`` uses by default), networks 1.. are
  ``peers``; optionally one shared encoder (MC-Net); per-network logits of the labelled and unlabelled batches
  (with ``joint_bn``: one forward per network over both, as the references); the supervised loss *summed* over the
  networks (CPS: ``loss1 + loss2``; MC-Net: sum over decoders); one optimiser over all parameters (the references'
  two SGD optimisers with the same schedule and hyper-parameters are the same update); test-time prediction from
  network 0 (``predict_with="first"``, the references) or the mean of the networks' softmax (``"mean"``).

Shapes: images ``[B, C, *S]``, logits ``[B, K, *S]``, labels ``[B, *S]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_bench.core.backbone import SegNet
from ssl_bench.core.method import Batch, MethodContext
from ssl_bench.training.consistency import ConsistencyConfig, ConsistencyMethod

PREDICT_WITH = ("first", "mean")


def build_networks(
    ctx: MethodContext, overrides: Sequence[Mapping[str, Any]], dropout: float | None = None
) -> list[SegNet]:
    """One backbone per entry of ``overrides`` (backbone options such as ``{"upsampling": "transposed"}``), each
    freshly initialised; ``dropout`` (None: ``model.dropout``) is passed to all. Raises ValueError when a backbone
    does not honour an override (e.g. ``upsampling`` on V-Net)."""
    nets = []
    for override in overrides:
        extra = {} if dropout is None else {"dropout": dropout}
        net = ctx.build_backbone((), **extra, **override)
        for key, value in override.items():
            if getattr(net, key, None) != value:
                raise ValueError(f"backbone {type(net).__name__} has no option {key}={value!r} (needed by this method)")
        nets.append(net)
    return nets


@dataclass
class CoTrainingConfig(ConsistencyConfig):
    """Options shared by the co-training methods (each adds its own)."""

    #: test-time prediction: "first" (network 0, as the references test) or "mean" (mean softmax of all networks)
    predict_with: str = "first"


class CoTrainingMethod(ConsistencyMethod):
    """N jointly trained networks: ``student`` (network 0) and ``peers`` (1..N-1); see the module docstring.

    Subclasses call ``super().__init__(cfg, ctx, overrides, share_encoder)`` with one backbone-options mapping per
    network (``len(overrides) >= 2``) and implement ``training_step`` with :meth:`nets_forward` and
    :meth:`supervised_sum`.
    """

    Config = CoTrainingConfig

    def __init__(
        self,
        cfg: Any,
        ctx: MethodContext,
        overrides: Sequence[Mapping[str, Any]] = ({}, {}),
        share_encoder: bool = False,
    ) -> None:
        super().__init__(cfg, ctx)  # builds network 0 with the backbone's defaults
        if len(overrides) < 2:
            raise ValueError(f"co-training needs at least 2 networks, got {len(overrides)}")
        if self.cfg.predict_with not in PREDICT_WITH:
            raise ValueError(f"params.predict_with must be one of {PREDICT_WITH}, got {self.cfg.predict_with!r}")
        if overrides[0]:  # network 0 with options of its own: rebuilt
            self.student = build_networks(ctx, overrides[:1], self.cfg.dropout)[0]
        self.peers = nn.ModuleList(build_networks(ctx, overrides[1:], self.cfg.dropout))
        self.shared_encoder = share_encoder
        if share_encoder:
            for peer in self.peers:
                peer.share_encoder(self.student)

    @property
    def nets(self) -> list[SegNet]:
        """All networks, network 0 first."""
        return [self.student, *self.peers]

    def forward_nets(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every network on ``x``; with a shared encoder, one encoder pass decoded by each network."""
        if self.shared_encoder:
            feats = self.student.encode(x)
            return [net.decode(feats) for net in self.nets]
        return [net(x) for net in self.nets]

    def nets_forward(
        self, batch_l: Batch, batch_u: Batch | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Per-network logits of the labelled and the unlabelled batch (``joint_bn``: one call over both)."""
        x_u = None if batch_u is None else batch_u.image
        out_l, out_u = self.forward_split(lambda x: dict(enumerate(self.forward_nets(x))), batch_l.image, x_u)
        n = len(self.nets)
        return [out_l[i] for i in range(n)], None if out_u is None else [out_u[i] for i in range(n)]

    def supervised_sum(self, logits_l: Sequence[torch.Tensor], label: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``sup/total`` = sum over networks of :meth:`supervised`; each network's terms as ``sup/net{i}/{term}``."""
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for i, logits in enumerate(logits_l):
            terms = self.supervised(logits, label)
            total = terms["sup/total"] if total is None else total + terms["sup/total"]
            out.update({f"sup/net{i}/{k.split('/', 1)[1]}": v for k, v in terms.items() if k != "sup/total"})
        assert total is not None
        out["sup/total"] = total
        return out

    def supervised_only(self, batch_l: Batch) -> dict[str, torch.Tensor]:
        sup = self.supervised_sum(self.forward_nets(batch_l.image), batch_l.label)
        return {"loss": sup["sup/total"], **sup}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Network 0's logits, or (``"mean"``) the log of the networks' mean softmax (its softmax is that mean)."""
        if self.cfg.predict_with == "first":
            return self.student(x)
        probs = torch.stack([logits.float().softmax(1) for logits in self.forward_nets(x)]).mean(0)
        return probs.clamp_min(1e-12).log()

    def inference_module(self) -> nn.Module:
        """Network 0, or all networks (shared parameters counted once) for ``predict_with="mean"``."""
        return self.student if self.cfg.predict_with == "first" else nn.ModuleList(self.nets)
