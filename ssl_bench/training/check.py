"""``ssl-bench check``: a contract test of a method on tiny synthetic 2D and 3D batches (a few CPU steps).

Checks, per dimensionality the method supports:
    * the method builds, declares at least one stage, and ``training_step`` returns a finite ``loss``;
    * every loss term is finite; a semi-supervised stage returns at least one ``unsup/*`` term;
    * every ``unsup/*`` term has a non-zero gradient w.r.t. the student's parameters (catches consistency
      losses computed on detached tensors);
    * optimiser steps and the hooks (``on_stage_start``, ``after_optimizer_step``, ``on_epoch_end``) run;
    * ``predict`` returns ``[B, K, *spatial]`` finite logits;
    * a state-dict round trip into a fresh instance leaves predictions unchanged;
    * ``parameter_counts`` reports train >= 1 and 1 <= inference.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.errors import ConfigError
from ssl_bench.core.method import Batch, EpochData, Method, MethodContext, StepInfo
from ssl_bench.core.registry import BACKBONES, METHODS, normalize_name

DEFAULT_BACKBONES = {2: "unet2d", 3: "unet3d"}
MAX_GRADIENT_TRIES = 30


@dataclass
class CheckResult:
    dims: int
    name: str
    ok: bool
    detail: str = ""


def _synthetic(dims: int, n: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a bright square per class so that labels are learnable: ``[n, 1, *s]``, ``[n, *s]``."""
    g = torch.Generator().manual_seed(seed)
    size = (16, 16) if dims == 2 else (16, 16, 16)
    labels = torch.zeros((n, *size), dtype=torch.long)
    for i in range(n):
        for k in range(1, num_classes):
            lo = torch.randint(0, 10, (dims,), generator=g).tolist()
            region = tuple(slice(a, a + 5) for a in lo)
            labels[(i, *region)] = k
    images = labels.float()[:, None] / num_classes + 0.1 * torch.randn((n, 1, *size), generator=g)
    return images, labels


def _student_params(method: Method) -> list[torch.nn.Parameter]:
    return [p for p in method.inference_module().parameters() if p.requires_grad]


def _check_gradients(
    losses: dict[str, Any], keys: set[str], student: list[torch.nn.Parameter], record: Any, last: bool
) -> set[str]:
    """Verify a non-zero student gradient for the ``keys`` terms; returns the keys settled on this step."""
    settled = set()
    for key in sorted(keys):
        term = losses.get(key)
        if not (torch.is_tensor(term) and term.requires_grad):
            record(f"gradient {key}", False, "term is missing or detached from the graph (no gradient)")
            settled.add(key)
            continue
        if float(term.detach()) == 0.0 and not last:
            continue  # empty region on this batch: try the next step
        grads = torch.autograd.grad(term, student, retain_graph=True, allow_unused=True)
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
        detail = f"|grad| = {norm:.3e} w.r.t. the student"
        if float(term.detach()) == 0.0:
            detail += f" (term stayed exactly 0 for {MAX_GRADIENT_TRIES} steps)"
        record(f"gradient {key}", norm > 0, detail)
        settled.add(key)
    return settled


def check_method(
    name: str,
    *,
    estimator: str | None = None,
    backbone: str | None = None,
    dims: tuple[int, ...] = (2, 3),
    params: dict[str, Any] | None = None,
) -> list[CheckResult]:
    """Run the contract check; returns one result per check (never raises for a failing check).

    ``params`` replaces fields of the method's config (e.g. ``{"estimator_options": {"threshold": 0.5}}``, so that
    an estimator's certain region is not empty on the tiny synthetic batch)."""
    method_cls: type[Method] = METHODS.get(name)
    results: list[CheckResult] = []
    for d in dims:
        if d not in method_cls.dims:
            results.append(CheckResult(d, "supported", True, f"skipped: {normalize_name(name)} is not {d}D"))
            continue
        bb_name = backbone or DEFAULT_BACKBONES[d]
        entry = BACKBONES.entry(bb_name)
        if d not in entry.meta.get("dims", (2, 3)):
            results.append(CheckResult(d, "backbone", True, f"skipped: backbone {bb_name} is not {d}D"))
            continue
        results += _check_dims(method_cls, d, bb_name, estimator, params or {})
    return results


def _check_dims(
    method_cls: type[Method], d: int, bb_name: str, estimator: str | None, overrides: dict[str, Any]
) -> list[CheckResult]:
    out: list[CheckResult] = []

    def record(check: str, ok: bool, detail: str = "") -> bool:
        out.append(CheckResult(d, check, ok, detail))
        return ok

    spec = TaskSpec(dims=d, num_classes=3, label_names=("background", "a", "b"))
    params: Any = method_cls.Config()
    if estimator is not None:
        if "estimator" not in [f.name for f in fields(params)]:
            raise ConfigError(f"method {method_cls.__name__} does not take --estimator")
        params = replace(params, estimator=estimator)
    if overrides:
        params = replace(params, **overrides)
    factory = functools.partial(BACKBONES.get(bb_name), 1, spec.num_classes, width=4, depth=2, norm="batch")
    ctx = MethodContext(spec=spec, backbone_factory=factory, epochs=100)  # room for any pre-training stage
    torch.manual_seed(0)
    try:
        method = method_cls(params, ctx)
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        record("build", False, f"{type(exc).__name__}: {exc}")
        return out
    record("build", True, f"backbone {bb_name}")
    stages = method.stages()
    if not record("stages", bool(stages) and all(s.epochs >= 0 for s in stages), f"{[s.name for s in stages]}"):
        return out

    n = 4 if d == 2 else 2
    x_l, y_l = _synthetic(d, n, spec.num_classes, 1)
    x_u, y_u = _synthetic(d, n, spec.num_classes, 2)
    aug = torch.tensor([[1, 0], [2, 1], [0, 1], [3, 0]])[:n] if d == 2 else None
    batch_l = Batch(x_l, y_l, torch.arange(n), aug)
    batch_u = Batch(x_u, None, torch.arange(n), aug)
    optimizer = torch.optim.Adam(list(method.trainable_parameters()), lr=1e-2)  # fast: masks become non-trivial
    student = _student_params(method)
    total_steps = 2 * len(stages)

    def unlabelled_iter(bs: int) -> Iterator[Batch]:
        for s in range(0, n, bs):
            yield Batch(x_u[s : s + bs], None, torch.arange(s, min(n, s + bs)))

    step = 0
    for stage in stages:
        use_u = stage.unlabeled and method_cls.uses_unlabeled
        pending: set[str] | None = None  # unsup terms whose gradient is still to be verified
        k = 0
        # step 0 starts the stage; later steps sit mid-schedule, where ramped weights and thresholds are non-trivial.
        # A term that is exactly 0 on a step (e.g. an empty certain region early in training) is tested again on
        # the next step, up to MAX_GRADIENT_TRIES steps.
        while k < 2 or (pending and k < 1 + MAX_GRADIENT_TRIES):
            stage_step = 0 if k == 0 else max(1, stage.epochs)  # mid-stage: ramps well above 0, not saturated
            info = StepInfo(
                step=step,
                epoch=stage_step // 2,
                stage=stage.name,
                stage_step=stage_step,
                stage_steps=2 * max(1, stage.epochs),
                total_steps=total_steps,
                steps_per_epoch=2,
            )
            method.train()
            try:
                if k == 0:
                    method.on_stage_start(stage, info)  # as the trainer, before a stage's first step
                losses = method.training_step(batch_l, batch_u if use_u else None, info)
            except Exception as exc:  # noqa: BLE001
                record(f"training_step[{stage.name}]", False, f"{type(exc).__name__}: {exc}")
                return out
            bad = [key for key, v in losses.items() if torch.is_tensor(v) and not torch.isfinite(v).all()]
            if k == 0 or "loss" not in losses or bad:  # report once per stage unless something breaks
                if not record(f"loss key[{stage.name}]", "loss" in losses, f"keys {sorted(losses)}"):
                    return out
                if not record(f"finite[{stage.name}]", not bad, f"non-finite: {bad}" if bad else ""):
                    return out
            if use_u and k >= 1:
                if pending is None:
                    unsup = [key for key in losses if key.startswith("unsup/")]
                    record(
                        f"unsup terms[{stage.name}]",
                        bool(unsup),
                        f"{unsup}" if unsup else "a semi-supervised stage returned no 'unsup/*' loss term",
                    )
                    pending = set(unsup)
                pending -= _check_gradients(losses, pending, student, record, last=k >= MAX_GRADIENT_TRIES)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            method.after_optimizer_step(info)
            step += 1
            k += 1
        method.on_epoch_end(step // 2, stage, EpochData(unlabelled_iter, n, torch.device("cpu"), y_u))
    record("hooks", True, "on_stage_start, after_optimizer_step, on_epoch_end ran")

    method.eval()
    with torch.no_grad():
        logits = method.predict(x_l)
    expected = (n, spec.num_classes, *x_l.shape[2:])
    record("predict shape", tuple(logits.shape) == expected, f"{tuple(logits.shape)} (expected {expected})")
    record("predict finite", bool(torch.isfinite(logits).all()))

    torch.manual_seed(1)
    twin = method_cls(params, ctx)
    try:
        twin.load_state_dict(method.state_dict())
        twin.load_extra_state(method.extra_state())
        twin.eval()
        with torch.no_grad():
            same = torch.allclose(twin.predict(x_l), logits, atol=1e-6)
        record(
            "state round trip", same, "predictions identical after load_state_dict" if same else "predictions differ"
        )
    except Exception as exc:  # noqa: BLE001
        record("state round trip", False, f"{type(exc).__name__}: {exc}")
    counts = method.parameter_counts()
    record("parameter counts", counts["train"] >= 1 and counts["inference"] >= 1, f"{counts}")
    return out
