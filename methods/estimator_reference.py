"""``estimator-reference``: one supervised network that serves every uncertainty estimator (``ssl-bench estimators``).

Why: Table VI compares estimators by training CoraNet once per estimator, so the networks differ as well as the
estimators. This method trains *one* network on the labelled data whose heads and layers are what the listed
estimators need (``params.estimators``, default the built-ins that need something: ``crm``, ``aleatoric``,
``mc-dropout``), so ``ssl-bench estimators compare RUN_DIR`` scores all of them on the same weights.

* Network: the configured backbone with CoraNet's main branch (``main_head="branch"``, as CoraNet's student), every
  head the estimators declare (``required_heads``: CRM's ``con``/``rad`` branches, the aleatoric ``logvar``
  head) and dropout ``max(required_dropout())`` (MC dropout's p = 0.5 on the bottleneck and last feature).
* Loss on labelled batches: the supervised loss of the main head (``params.loss``, as the ``unet`` baseline), plus
  CoraNet's cost-sensitive CE of the con/rad heads (Eq. 1, ``params.alpha``) when a CRM estimator is listed, plus
  every listed estimator's own ``head_loss`` (the aleatoric likelihood). Weights 1:1, as CoraNet's L_crm.
* Dropout: on during training (``params.train_dropout``, default true: MC dropout samples masks the network was
  trained with, as CoraNet's mc-dropout variant trains them); at comparison time the network is in eval mode, so
  only estimators that ask for dropout (mc-dropout; entropy's UA-MT passes) switch it on.

Deviation from the paper: none claimed; this is a measurement instrument, not a method of the paper. Its test
score (``eval/test``) is that of a supervised U-Net with extra heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.modules.dropout import _DropoutNd

from ssl_bench.core.backbone import HeadSpec
from ssl_bench.core.method import Batch, Method, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.core.uncertainty import UncertaintyEstimator, build_estimator
from ssl_bench.methods.coranet import ConservativeRadicalDisagreement, cost_sensitive_ce
from ssl_bench.training.losses import check_supervised_loss, supervised_loss

#: estimators whose needs the default reference model covers (the others need nothing)
DEFAULT_ESTIMATORS = ("crm", "aleatoric", "mc-dropout")


@dataclass
class EstimatorReferenceConfig:
    """Options of ``estimator-reference``."""

    #: estimators whose heads, head losses and dropout the network carries (add a plugin's here, with --plugin)
    estimators: list[str] = field(default_factory=lambda: list(DEFAULT_ESTIMATORS))
    #: options per estimator (its Config fields), e.g. {"aleatoric": {"T": 20}}
    estimator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: supervised loss of the main head (training.losses.SUPERVISED_LOSSES)
    loss: str = "ce"
    #: CRM cost alpha of Eq. 1 (con: [alpha, 1], rad: [1, alpha] for [background, foreground])
    alpha: float = 5.0
    #: dropout layers active during training (false: built, but only estimators switch them on)
    train_dropout: bool = True


def reference_estimators(cfg: EstimatorReferenceConfig, num_classes: int) -> dict[str, UncertaintyEstimator]:
    """The listed estimators, built with their options (unknown names raise the registry's error)."""
    unknown = set(cfg.estimator_options) - set(cfg.estimators)
    if unknown:
        raise ValueError(f"params.estimator_options names estimators not in params.estimators: {sorted(unknown)}")
    return {n: build_estimator(n, cfg.estimator_options.get(n), num_classes) for n in cfg.estimators}


def collect_heads(estimators: dict[str, UncertaintyEstimator]) -> list[HeadSpec]:
    """Union of the estimators' heads (a name declared twice must be the same head)."""
    heads: dict[str, HeadSpec] = {}
    for name, est in estimators.items():
        for h in est.required_heads():
            if h.name in heads and heads[h.name] != h:
                raise ValueError(f"estimator {name} declares head {h} but another estimator declared {heads[h.name]}")
            heads[h.name] = h
    return list(heads.values())


@METHODS.register("estimator-reference")
class EstimatorReference(Method):
    """One supervised network with every estimator's heads (CRM con/rad, aleatoric logvar, dropout) to compare them."""

    Config = EstimatorReferenceConfig
    uses_unlabeled = False

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        check_supervised_loss(c.loss)
        if c.alpha <= 0:
            raise ValueError(f"params.alpha must be > 0, got {c.alpha}")
        self.estimators = reference_estimators(c, self.spec.num_classes)
        self.crm = any(isinstance(e, ConservativeRadicalDisagreement) for e in self.estimators.values())
        self.dropout = max([0.0, *(e.required_dropout() for e in self.estimators.values())])
        self.student = ctx.build_backbone(collect_heads(self.estimators), main_head="branch", dropout=self.dropout)
        self.register_buffer("w_con", torch.tensor([c.alpha, 1.0]), persistent=False)
        self.register_buffer("w_rad", torch.tensor([1.0, c.alpha]), persistent=False)

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        assert batch_l.label is not None
        y = batch_l.label
        if not self.cfg.train_dropout:
            for m in self.student.modules():
                if isinstance(m, _DropoutNd):
                    m.eval()
        heads = self.student.forward_heads(batch_l.image)
        logs = supervised_loss(heads["main"], y, self.cfg.loss)
        loss = logs.pop("sup/total")
        if self.crm:
            cs = cost_sensitive_ce(heads, y, self.w_con, self.w_rad)
            logs["sup/ce_con"], logs["sup/ce_rad"] = cs["con"], cs["rad"]
            loss = loss + cs["con"] + cs["rad"]
        for name, est in self.estimators.items():
            head = est.head_loss(heads, y)
            if head is not None:
                logs[f"sup/head_{name}"] = head
                loss = loss + head
        return {"loss": loss, **logs}

    def inference_module(self) -> torch.nn.Module:
        return self.student

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)
