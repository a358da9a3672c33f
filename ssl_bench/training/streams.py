"""Seeded, resumable, infinite sample streams (one labelled, one unlabelled) over two kinds of sources.

* :class:`TensorSource` — fixed-size samples held as one tensor (2D slices at the training size, or fixed 3D
  views such as the released CoraNet code's centre crops); 2D samples get the configured augmentation.
* :class:`CropSource` — whole 3D volumes of any size; each draw is a random ``patch`` crop (zero-padded where the
  volume is smaller), the paper's 3D augmentation ("only random crop").

Each pass over a source is a permutation drawn from ``(seed, stream name, pass number)``, so a stream's state is
two integers, and a resumed run draws exactly the batches an uninterrupted run would have drawn (crop offsets
and augmentations come from a generator the trainer seeds per step).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ssl_bench.core.method import Batch
from ssl_bench.training.augment import augment_2d


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any parts (stable across processes and platforms)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class TensorSource:
    """Samples ``images [N, C, *S]`` with optional ``labels [N, *S]``; 2D samples are augmented with ``augment``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, augment: str = "none") -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor, generator: torch.Generator, with_labels: bool) -> Batch:
        image = self.images[idx]
        label = self.labels[idx].long() if (with_labels and self.labels is not None) else None
        if image.ndim == 4:
            image, label, aug = augment_2d(image, label, self.augment, generator)
            return Batch(image, label, idx, aug)
        return Batch(image, label, idx)

    def fixed_views(self, batch_size: int) -> Iterator[Batch]:
        """Every sample once, in order, un-augmented."""
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)))
            yield Batch(self.images[idx], None, idx)


def crop_or_pad(volume: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """``volume[start : start + patch]`` per axis, zero-padded at the far side where the volume is too small."""
    region = tuple(slice(s, s + p) for s, p in zip(start, patch))
    out = volume[region]
    if out.shape != tuple(patch):
        out = np.pad(out, [(0, p - n) for p, n in zip(patch, out.shape)])
    return out


def center_start(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    return tuple(max(0, (s - p) // 2) for s, p in zip(shape, patch))


class CropSource:
    """Random ``patch`` crops from 3D volumes ``(Z, Y, X)`` (images float, labels uint8)."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray] | None, patch: Sequence[int]) -> None:
        self.images, self.labels, self.patch = images, labels, tuple(patch)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor, generator: torch.Generator, with_labels: bool) -> Batch:
        images, labels, starts = [], [], []
        for i in idx.tolist():
            shape = self.images[i].shape
            start = [
                int(torch.randint(0, max(1, s - p + 1), (1,), generator=generator)) for s, p in zip(shape, self.patch)
            ]
            images.append(crop_or_pad(self.images[i], start, self.patch))
            if with_labels and self.labels is not None:
                labels.append(crop_or_pad(self.labels[i], start, self.patch))
            starts.append(start)
        image = torch.from_numpy(np.stack(images).astype(np.float32))[:, None]
        label = torch.from_numpy(np.stack(labels).astype(np.int64)) if labels else None
        return Batch(image, label, idx, crop=torch.tensor(starts))

    def fixed_views(self, batch_size: int) -> Iterator[Batch]:
        """The centre crop of every volume, in order (the released CoraNet code's unlabelled views)."""
        for first in range(0, len(self), batch_size):
            idx = torch.arange(first, min(first + batch_size, len(self)))
            crops = [
                crop_or_pad(self.images[i], center_start(self.images[i].shape, self.patch), self.patch)
                for i in idx.tolist()
            ]
            yield Batch(torch.from_numpy(np.stack(crops).astype(np.float32))[:, None], None, idx)


Source = TensorSource | CropSource


class Stream:
    """Infinite batches of ``batch_size`` samples from a source.

    Args:
        labelled: if False, batches carry ``label=None`` (labels of unlabelled data are never shown to a method).
    """

    def __init__(self, name: str, source: Source, batch_size: int, seed: int, labelled: bool = True) -> None:
        if len(source) == 0:
            raise ValueError(f"stream {name!r} is empty")
        self.name = name
        self.source = source
        self.batch_size = batch_size
        self.seed = seed
        self.labelled = labelled
        self.pass_index = 0
        self.position = 0
        self._perm = self._permutation(0)

    def __len__(self) -> int:
        return len(self.source)

    def _permutation(self, pass_index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.name, pass_index))
        return torch.randperm(len(self.source), generator=g)

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

    def next(self, generator: torch.Generator) -> Batch:
        return self.source.batch(self.next_indices(), generator, self.labelled)

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "position": self.position, "n": len(self.source)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != len(self.source):
            raise ValueError(f"stream {self.name!r}: checkpoint has {state['n']} samples, data has {len(self.source)}")
        self.pass_index = state["pass_index"]
        self.position = state["position"]
        self._perm = self._permutation(self.pass_index)
