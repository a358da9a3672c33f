"""GPU-efficiency settings: AMP dtype choice (bf16 / fp16 + GradScaler / off on the CPU), CPU bf16 autocast in a
tiny training, and the device-independent parts of channels-last / pinned batches."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ssl_bench.core.errors import ConfigError
from ssl_bench.training.efficiency import Efficiency, resolve_amp_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_amp_dtype_choice(monkeypatch):
    assert resolve_amp_dtype(True, "auto", CPU) is None  # the CPU default: full precision
    assert resolve_amp_dtype(True, "bf16", CPU) is torch.bfloat16
    assert resolve_amp_dtype(False, "bf16", CUDA) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp_dtype(True, "auto", CUDA) is torch.bfloat16
    assert resolve_amp_dtype(True, "fp16", CUDA) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp_dtype(True, "auto", CUDA) is torch.float16  # older GPUs: fp16 with a GradScaler
    with pytest.raises(ConfigError, match="amp_dtype"):
        resolve_amp_dtype(True, "fp8", CPU)


def test_cpu_settings_leave_batches_and_model_alone():
    tc = SimpleNamespace(amp=True, amp_dtype="auto", channels_last=True, cudnn_benchmark=True, pin_memory=True)
    perf = Efficiency(tc, CPU)
    assert perf.dtype is None and not perf.scaler.is_enabled() and not perf.channels_last and not perf.pin_memory
    assert "amp off" in perf.describe()


def test_bf16_autocast_training_on_the_cpu(tmp_path):
    """A few steps under CPU bf16 autocast: the convolutions run in bf16, the loss is finite, weights stay fp32."""
    from ssl_bench.training.runner import build_adapter, build_method, resolve_config
    from ssl_bench.training.trainer import Trainer

    cfg = resolve_config("unet", "cardiac-phantom", preset="smoke", overrides={"trainer.amp_dtype": "bf16"})
    adapter = build_adapter(cfg)
    trainer = Trainer(cfg, build_method(cfg, adapter), adapter, tmp_path / "run", CPU, progress=False)
    dtypes = []
    conv = next(m for m in trainer.method.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    losses = [trainer._train_step(trainer.stages[0])["loss"] for _ in range(3)]
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.float32 for p in trainer.method.parameters())
