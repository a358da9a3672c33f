"""Data-parallel training of one run on N processes (``torchrun --nproc_per_node N -m ssl_bench run ...``).

Design (the methods hold several networks, EMA teachers and per-step logic, so no ``DistributedDataParallel``
wrapper is imposed on them):

* **Batches.** Every rank draws the same *global* batch from the two seeded streams (their state is the same on
  every rank, so resume stays exact) and keeps its contiguous shard, ``B / N`` samples (:func:`shard_batch`).
* **Gradients.** After ``backward`` the gradients of the trainable parameters are averaged over the ranks in one
  flat all-reduce (:meth:`DistributedRun.sync_gradients`); every rank then takes the same optimiser step, so the
  weights, and the EMA teachers updated from them, stay identical on every rank without broadcasting.
* **BatchNorm.** Each BatchNorm is replaced by :class:`GlobalBatchNorm`, whose training statistics are those of
  the global batch (an autograd-aware all-reduce of per-channel sums; ``nn.SyncBatchNorm`` on CUDA). Hence a
  2-process run equals a 1-process run of the same global batch (tests/test_distributed.py, to 1e-5), for losses
  that are means over samples of equal-sized shards (cross-entropy, MSE consistency); losses pooled over the batch
  (Dice) are averaged over shards instead.
* **Randomness inside a step** (dropout, noise): seeded per rank, so shards get independent draws.
* **Writes.** Only rank 0 writes (``ssl_bench.core.io`` skips writes on other ranks; metrics lines likewise);
  validation and test scoring are sharded by case and gathered (``ssl_bench.evaluation.evaluate_cases``).

Methods that keep per-sample state filled from the training batch (Temporal Ensembling targets) update it from
their own shard only; such state is rank 0's in checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ssl_bench.core import distributed as cd
from ssl_bench.core.errors import ConfigError
from ssl_bench.core.method import Batch


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...); True if joined.

    Backend NCCL when the run uses CUDA, else gloo; each rank uses GPU ``LOCAL_RANK``. Ranks other than 0 print
    nothing to stdout.
    """
    import torch.distributed as dist

    if not launched_by_torchrun() or dist.is_initialized():
        return dist.is_initialized()
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    if dist.get_rank() != 0:
        import sys

        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    import atexit

    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return True


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(sum)`` with its gradient: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks (any device and backend, gloo included).

    In training mode, per-channel ``sum x``, ``sum x^2`` and the count are all-reduced (autograd flows through the
    reduction, as in ``nn.SyncBatchNorm``); running statistics use the unbiased global variance. In evaluation
    mode, or in a single process, it is ``F.batch_norm``. Input ``[B, C, *S]``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and cd.world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        stats = _SumOverRanks.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm in ``module`` (in place, keeping the same parameter tensors, so optimisers and
    EMA copies made later see them) by :class:`GlobalBatchNorm` (CPU) or ``nn.SyncBatchNorm`` (CUDA)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child, device)
    return module


def shard_batch(batch: Batch, rank: int, world: int) -> Batch:
    """Samples ``[rank * B / world, (rank + 1) * B / world)`` of a global batch (every field sliced alike)."""
    n = batch.image.shape[0] // world
    part = slice(rank * n, (rank + 1) * n)

    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[part]

    return Batch(batch.image[part], cut(batch.label), batch.index[part], cut(batch.aug), cut(batch.crop))


class DistributedRun:
    """The trainer's view of the process group (a no-op object in a single process)."""

    def __init__(self, batch_sizes: tuple[int, ...] = ()) -> None:
        self.rank, self.world = cd.rank(), cd.world_size()
        self.device = torch.device("cpu")
        bad = [b for b in batch_sizes if b % self.world]
        if bad:
            raise ConfigError(
                f"batch sizes {batch_sizes} must be divisible by the {self.world} processes (global batch split evenly)"
            )

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def seed_parts(self) -> tuple[int, ...]:
        """Extra parts of the per-step seed: none in one process (unchanged runs), the rank under torchrun."""
        return (self.rank,) if self.active else ()

    def prepare(self, method: nn.Module, device: torch.device) -> None:
        self.device = device  # NCCL reduces CUDA tensors only
        if self.active:
            convert_batchnorm(method, device)

    def local(self, batch: Batch | None) -> Batch | None:
        return batch if (batch is None or not self.active) else shard_batch(batch, self.rank, self.world)

    def sync_gradients(self, params: Any) -> None:
        """Average the gradients of ``params`` over the ranks (one flat all-reduce)."""
        if not self.active:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def reduce_values(self, values: dict[str, float], stop: bool) -> tuple[dict[str, float], bool]:
        """Step values averaged over the ranks (the global batch's loss), and whether any rank was asked to stop
        (so all ranks checkpoint at the same step)."""
        if not self.active:
            return values, stop
        import torch.distributed as dist

        keys = sorted(values)
        vec = torch.tensor([values[k] for k in keys] + [float(stop)], dtype=torch.float64, device=self.device)
        dist.all_reduce(vec)
        mean = {k: float(v) / self.world for k, v in zip(keys, vec[:-1].tolist())}
        return {k: mean[k] for k in values}, bool(vec[-1] > 0)
