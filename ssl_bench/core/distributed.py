"""Process-group facts every layer may need under ``torchrun`` (rank, world size, rank-0-only writes, sharding and
gathering of per-case work). Without an initialised process group everything is the single-process identity.

The training side (init from the torchrun environment, gradient all-reduce, synchronised BatchNorm, batch
shards) is :mod:`ssl_bench.training.distributed`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
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


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 alone (a file it creates, a lock it takes), its result on every rank.

    If ``fn`` raises on rank 0, every rank raises: rank 0 its own exception, the others the same one (or a
    ``RuntimeError`` with its message where it cannot be pickled), so no rank is left waiting in a collective
    for a rank that has stopped.
    """
    dist = _dist()
    if not dist or world_size() == 1:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box = [(True, fn())]
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
            try:
                pickle.dumps(exc)
                box = [(False, exc)]
            except Exception:  # noqa: BLE001 - an exception that does not pickle still reaches the others
                box = [(False, RuntimeError(f"rank 0: {type(exc).__name__}: {exc}"))]
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if error is not None:
        raise error
    if not ok:
        raise value
    return value


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
