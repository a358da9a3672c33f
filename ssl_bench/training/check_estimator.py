"""``ssl-bench check --estimator E`` (no method): a contract test of an uncertainty estimator on tiny networks.

Per dimensionality (2D, 3D), on a small U-Net built with the estimator's heads and dropout, in eval mode and in
train mode (a method's teacher may be in either):
    * ``estimate`` returns ``prob [B, K, *S]`` (finite, in [0, 1], summing to 1 over classes), ``certain [B, *S]``
      bool and ``score`` None or ``[B, *S]`` finite;
    * determinism: two calls under the same torch seed give identical outputs;
    * no gradient: outputs do not require grad and no parameter receives a ``.grad``;
    * BatchNorm running statistics and every module's train/eval mode are unchanged;
    * a ``head_loss`` (if the estimator has heads) is finite and has a gradient.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ssl_bench.core.registry import BACKBONES
from ssl_bench.core.uncertainty import build_estimator
from ssl_bench.training.check import DEFAULT_BACKBONES, CheckResult, _synthetic

NUM_CLASSES = 3


def _buffers(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.named_buffers()}


def _modes(net: torch.nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def check_estimator(
    name: str, *, options: dict[str, Any] | None = None, backbone: str | None = None, dims: tuple[int, ...] = (2, 3)
) -> list[CheckResult]:
    """Run the estimator contract check; one result per check (never raises for a failing check)."""
    results: list[CheckResult] = []
    for d in dims:
        bb = backbone or DEFAULT_BACKBONES[d]
        if d not in BACKBONES.entry(bb).meta.get("dims", (2, 3)):
            results.append(CheckResult(d, "backbone", True, f"skipped: backbone {bb} is not {d}D"))
            continue
        results += _check_dims(name, options or {}, d, bb)
    return results


def _check_dims(name: str, options: dict[str, Any], d: int, bb: str) -> list[CheckResult]:
    out: list[CheckResult] = []

    def record(check: str, ok: bool, detail: str = "") -> bool:
        out.append(CheckResult(d, check, bool(ok), detail))
        return bool(ok)

    try:
        est = build_estimator(name, options, NUM_CLASSES)
        torch.manual_seed(0)
        factory = functools.partial(BACKBONES.get(bb), 1, NUM_CLASSES, width=4, depth=2, norm="batch")
        net = factory(extra_heads=tuple(est.required_heads()), main_head="branch", dropout=est.required_dropout())
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        record("build", False, f"{type(exc).__name__}: {exc}")
        return out
    heads = sorted(getattr(net, "extra_heads", {}))
    record("build", True, f"backbone {bb}, heads {heads or 'none'}, dropout {est.required_dropout():g}")
    x, y = _synthetic(d, 2, NUM_CLASSES, 1)
    # a few BatchNorm updates so that running statistics differ from batch statistics
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(x)
    for mode in ("eval", "train"):
        net.train(mode == "train")
        before, modes = _buffers(net), _modes(net)
        try:
            torch.manual_seed(123)
            a = est.estimate(net, x, None)
            torch.manual_seed(123)
            b = est.estimate(net, x, None)
        except Exception as exc:  # noqa: BLE001
            record(f"estimate[{mode}]", False, f"{type(exc).__name__}: {exc}")
            return out
        k, spatial = NUM_CLASSES, tuple(x.shape[2:])
        shape_ok = tuple(a.prob.shape) == (x.shape[0], k, *spatial) and tuple(a.certain.shape) == (x.shape[0], *spatial)
        score_ok = a.score is None or tuple(a.score.shape) == (x.shape[0], *spatial)
        record(
            f"shapes[{mode}]",
            shape_ok and score_ok and a.certain.dtype == torch.bool,
            f"prob {tuple(a.prob.shape)}, certain {tuple(a.certain.shape)} {a.certain.dtype}, "
            f"score {None if a.score is None else tuple(a.score.shape)}",
        )
        p = a.prob.detach().float()
        ranges = bool(torch.isfinite(p).all()) and float(p.min()) >= 0 and float(p.max()) <= 1 + 1e-5
        sums = bool(torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-4))
        finite_score = a.score is None or bool(torch.isfinite(a.score).all())
        record(f"value ranges[{mode}]", ranges and sums and finite_score, "prob in [0, 1], sums to 1; score finite")
        same = torch.equal(a.prob, b.prob) and torch.equal(a.certain, b.certain)
        same = same and ((a.score is None and b.score is None) or torch.equal(a.score, b.score))
        record(f"deterministic under a seed[{mode}]", same, "" if same else "two calls with torch.manual_seed differ")
        tensors = [t for t in (a.prob, a.certain, a.score) if t is not None]
        no_grad = not any(t.requires_grad for t in tensors) and all(p_.grad is None for p_ in net.parameters())
        record(f"no gradient[{mode}]", no_grad, "" if no_grad else "outputs require grad or parameters got .grad")
        after = _buffers(net)
        changed = [n for n in before if not torch.equal(before[n], after[n])]
        record(f"BatchNorm statistics untouched[{mode}]", not changed, f"changed: {changed[:3]}" if changed else "")
        record(f"modes restored[{mode}]", _modes(net) == modes, "")
    if heads:
        net.train()
        loss = est.head_loss(net.forward_heads(x), y)
        if loss is None:
            record("head loss", True, "no head loss (heads trained by the method)")
        else:
            grads = torch.autograd.grad(loss, [p for p in net.extra_heads.parameters()], allow_unused=True)
            norm = sum(float(g.abs().sum()) for g in grads if g is not None)
            record(
                "head loss",
                bool(torch.isfinite(loss.detach())) and norm > 0,
                f"loss {float(loss.detach()):.4f}, |grad| {norm:.3e}",
            )
    return out
