"""Built-in 3D phantom ``pancreas-phantom-3d``: the pancreas phantom as whole volumes for 3D methods.

Same generator as ``pancreas-phantom`` (see :mod:`ssl_bench.datasets.phantom` for the anatomy, intensities,
determinism and cache), but with more, thinner slices (default 32 slices of 64 x 64 pixels spanning the same
anatomy, spacing about (0.56, 1.2, 1.2) mm) and ``dims=3``: methods train on random 3D crops and are evaluated
with sliding-window inference. Synthetic, no medical validity; meant for tests, demos and the 3D pipeline.
Default 20 patients (14 / 2 / 4 train / val / test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.registry import DATASETS
from ssl_bench.datasets.phantom import PancreasPhantom

_PATCH_SMOKE = (16, 32, 32)
_PATCH_CPU = (32, 48, 48)


@DATASETS.register("pancreas-phantom-3d")
class PancreasPhantom3D(PancreasPhantom):
    """Synthetic 3D abdominal-CT-like volumes with a low-contrast pancreas (3D methods), generated on first use."""

    name = "pancreas-phantom-3d"
    spec = TaskSpec(dims=3, num_classes=2, label_names=("background", "pancreas"), modality="CT")
    seed_tag = 3
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # koncle/CoraNet as released: its V-Net with InstanceNorm on 96^3 crops, one centre crop per unlabelled volume
        "released": {
            "model.backbone": "vnet",
            "model.norm": "instance",
            "dataset.unlabeled_views": "center",
        },
        "smoke": {
            "model.backbone": "vnet",
            "dataset.patch_size": _PATCH_SMOKE,
            "eval.patch_size": _PATCH_SMOKE,
            "eval.stride": (8, 16, 16),
            "trainer.batch_size": 2,
            "trainer.unlabeled_batch_size": 2,
            "dataset.unlabeled_views": "center",
        },
        "cpu": {
            "model.backbone": "vnet",
            "dataset.patch_size": _PATCH_CPU,
            "eval.patch_size": _PATCH_CPU,
            "eval.stride": (16, 24, 24),
            "trainer.batch_size": 2,
            "trainer.unlabeled_batch_size": 2,
            "dataset.unlabeled_views": "center",
        },
        "paper": {
            "model.backbone": "vnet",
            "dataset.patch_size": (32, 64, 64),
            "eval.patch_size": (32, 64, 64),
            "eval.stride": (4, 16, 16),
            "trainer.batch_size": 4,
            "trainer.unlabeled_batch_size": 4,
            "dataset.unlabeled_views": "center",
        },
    }

    def __init__(
        self, root: str | Path | None = None, *, n_patients: int = 20, n_slices: int = 32, size: int = 64, seed: int = 0
    ) -> None:
        super().__init__(root, n_patients=n_patients, n_slices=n_slices, size=size, seed=seed)
