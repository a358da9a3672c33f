"""ssl-bench: a benchmark suite for semi-supervised medical image segmentation.

The package is layered; a lower layer never imports a higher one (``tests/test_layers.py`` checks it)::

    core/        errors, atomic I/O, registry, typed config, and the plugin interfaces
                 (Method, DatasetAdapter, UncertaintyEstimator, SegNet backbone)
    nets/        built-in backbones (U-Net, V-Net, ResNet-3D, segmentation-models-pytorch)
    evaluation/  metrics (equal to medpy), sliding-window inference, scoring of a model on a split
    training/    losses, ramps, EMA, augmentation, the trainer, the run folder (runner), contract checks
    reporting/   run records, paper/benchmark tables, leaderboard, figures
    cli/         the ``ssl-bench`` command

Plugin authors import the interfaces from here (``from ssl_bench import METHODS, Method, StepInfo``); the names
resolve lazily, so ``import ssl_bench`` stays cheap (no torch until a name is used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it (the documented, stable plugin API).
_PUBLIC: dict[str, str] = {
    # registries
    "METHODS": "ssl_bench.core.registry",
    "ESTIMATORS": "ssl_bench.core.registry",
    "DATASETS": "ssl_bench.core.registry",
    "BACKBONES": "ssl_bench.core.registry",
    "TABLES": "ssl_bench.core.registry",
    # method interface
    "Method": "ssl_bench.core.method",
    "MethodContext": "ssl_bench.core.method",
    "Batch": "ssl_bench.core.method",
    "StepInfo": "ssl_bench.core.method",
    "Stage": "ssl_bench.core.method",
    "EpochData": "ssl_bench.core.method",
    # dataset interface
    "DatasetAdapter": "ssl_bench.core.data",
    "TaskSpec": "ssl_bench.core.data",
    "Case": "ssl_bench.core.data",
    "SliceSet": "ssl_bench.core.data",
    # estimator interface
    "UncertaintyEstimator": "ssl_bench.core.uncertainty",
    "UncertaintyMap": "ssl_bench.core.uncertainty",
    # backbone interface
    "SegNet": "ssl_bench.core.backbone",
    "HeadSpec": "ssl_bench.core.backbone",
    # errors
    "DataError": "ssl_bench.core.errors",
    "ConfigError": "ssl_bench.core.errors",
    "PluginError": "ssl_bench.core.errors",
    # building blocks methods share
    "ConsistencyMethod": "ssl_bench.training.consistency",
    "ConsistencyConfig": "ssl_bench.training.consistency",
    "stochastic_mode": "ssl_bench.training.consistency",
    "EMATeacher": "ssl_bench.training.ema",
    "supervised_loss": "ssl_bench.training.losses",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ssl_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
