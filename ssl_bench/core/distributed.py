"""Process-group facts every layer may need under ``torchrun`` (rank, world size, rank-0-only writes, sharding and
gathering of per-case work). Without an initialised process group everything is the single-process identity.

The training side (init from the torchrun environment, gradient all-reduce, synchronised BatchNorm, batch
shards) is :mod:`ssl_bench.training.distributed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist else 0


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the only process that writes files."""
    return rank() == 0


def barrier() -> None:
    dist = _dist()
    if dist and world_size() > 1:
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (e.g. the run folder, whose name holds a timestamp)."""
    dist = _dist()
    if not dist or world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(items: Sequence[T]) -> list[T]:
    """This rank's items: every ``world_size``-th one, starting at ``rank`` (all items in one process)."""
    return list(items[rank() :: world_size()])


def gather_sharded(local: list[list[Any]], n_items: int) -> list[list[Any]]:
    """Inverse of :func:`shard`: ``local[i]`` are the results of this rank's i-th item; returns the results of all
    ``n_items`` items in their original order, on every rank (an all-gather, not a rank-0 subset)."""
    dist = _dist()
    if not dist or world_size() == 1:
        return local
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, local)
    out: list[list[Any]] = [[] for _ in range(n_items)]
    for r, results in enumerate(parts):
        for i, result in enumerate(results):
            out[r + i * world_size()] = result
    return out
