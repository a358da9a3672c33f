"""Seeded, resumable, infinite sample streams (one labelled, one unlabelled).

Each pass over a dataset is a permutation drawn from ``(seed, stream name, pass number)``, so a stream's state
is two integers and a resumed run draws exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib

import torch

from ssl_bench.method import Batch
from ssl_bench.transforms import augment_2d


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any parts (stable across processes and platforms)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Stream:
    """Infinite batches from in-memory tensors ``images [N, C, *spatial]``, ``labels [N, *spatial]``.

    Args:
        labelled: if False, batches carry ``label=None`` (labels of unlabelled data are never shown to a method).
    """

    def __init__(
        self,
        name: str,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int,
        labelled: bool = True,
    ) -> None:
        if len(images) == 0:
            raise ValueError(f"stream {name!r} is empty")
        self.name = name
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.seed = seed
        self.labelled = labelled
        self.pass_index = 0
        self.position = 0
        self._perm = self._permutation(0)

    def __len__(self) -> int:
        return len(self.images)

    def _permutation(self, pass_index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.name, pass_index))
        return torch.randperm(len(self.images), generator=g)

    def next_indices(self) -> torch.Tensor:
        out = []
        need = self.batch_size
        while need:
            take = min(need, len(self._perm) - self.position)
            out.append(self._perm[self.position : self.position + take])
            self.position += take
            need -= take
            if self.position == len(self._perm):
                self.pass_index += 1
                self.position = 0
                self._perm = self._permutation(self.pass_index)
        return torch.cat(out)

    def next(self, augment: str, generator: torch.Generator) -> Batch:
        idx = self.next_indices()
        image = self.images[idx]
        label = self.labels[idx].long() if (self.labels is not None and self.labelled) else None
        image, label, aug = augment_2d(image, label, augment, generator)
        return Batch(image, label, idx, aug)

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "position": self.position, "n": len(self.images)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != len(self.images):
            raise ValueError(f"stream {self.name!r}: checkpoint has {state['n']} samples, data has {len(self.images)}")
        self.pass_index = state["pass_index"]
        self.position = state["position"]
        self._perm = self._permutation(self.pass_index)
