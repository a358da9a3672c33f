"""GPU efficiency settings of the trainer: mixed precision, channels-last memory layout, ``cudnn.benchmark`` and
pinned host batches (config ``trainer.amp``, ``trainer.amp_dtype``, ``trainer.channels_last``,
``trainer.cudnn_benchmark``, ``trainer.pin_memory``).

AMP: ``amp_dtype=auto`` is bfloat16 where the GPU supports it (no loss scaling needed), else float16 with a
``GradScaler``. On the CPU, AMP is off unless ``amp_dtype=bf16`` is asked for explicitly (CPU bf16 autocast).
Channels-last, cuDNN autotuning and pinned memory apply on CUDA only (2D batches ``[B, C, H, W]``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ssl_bench.core.errors import ConfigError
from ssl_bench.core.method import Batch

AMP_DTYPES = ("auto", "bf16", "fp16")


def resolve_amp_dtype(enabled: bool, requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if requested not in AMP_DTYPES:
        raise ConfigError(f"trainer.amp_dtype must be one of {AMP_DTYPES}, got {requested!r}")
    if not enabled:
        return None
    if device.type == "cuda":
        if requested == "fp16" or (requested == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    return torch.bfloat16 if requested == "bf16" else None  # CPU: only when asked for


class Efficiency:
    """The per-run device settings the trainer applies (see the module docstring)."""

    def __init__(self, tc: Any, device: torch.device) -> None:
        self.device = device
        self.dtype = resolve_amp_dtype(bool(tc.amp), str(tc.amp_dtype), device)
        cuda = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.dtype == torch.float16)
        self.channels_last = bool(tc.channels_last) and cuda
        self.pin_memory = bool(tc.pin_memory) and cuda
        if cuda and tc.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

    def describe(self) -> str:
        amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[self.dtype]
        return f"amp {amp}, channels_last {self.channels_last}, pinned batches {self.pin_memory}"

    def prepare_model(self, module: nn.Module) -> nn.Module:
        """Channels-last weights (4D parameters only; others are unaffected)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def to_device(self, batch: Batch) -> Batch:
        """Host batch -> device batch (pinned, non-blocking copy on CUDA; channels-last 2D images)."""
        if self.pin_memory:
            label = None if batch.label is None else batch.label.pin_memory()
            batch = Batch(batch.image.pin_memory(), label, batch.index, batch.aug, batch.crop)
        batch = batch.to(self.device)
        if self.channels_last and batch.image.dim() == 4:
            batch.image = batch.image.contiguous(memory_format=torch.channels_last)
        return batch

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)
