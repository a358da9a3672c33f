"""Score uncertainty estimators on one trained network with known labels (``ssl-bench estimators compare``).

A comparison loads a run's network (its selected checkpoint, in eval mode: BatchNorm running statistics, dropout off
unless an estimator switches it on), takes 2D slices with labels — the ``val`` split, or the ``unlabelled``
training slices with the labels training never saw — at the training size (resized as for training), and runs every
estimator over them in batches. Per estimator it accumulates :class:`~ssl_bench.evaluation.uncertainty_stats.\
EstimatorStats` (bounded memory) and the cost: network passes per slice (images through the main head) and
milliseconds per slice. Each estimator starts from the same random seed, so a comparison is reproducible.

The result is a *record* (a JSON-ready dict, :func:`compare_run`); :mod:`.estimator_report` aggregates records over
seeds (several reference models) into tables and figures.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssl_bench.core.backbone import SegNet
from ssl_bench.core.data import DatasetAdapter
from ssl_bench.core.errors import ConfigError, DataError
from ssl_bench.core.registry import ESTIMATORS
from ssl_bench.core.transforms import prepare_slices
from ssl_bench.core.uncertainty import UncertaintyEstimator, build_estimator
from ssl_bench.evaluation.uncertainty_stats import EstimatorStats

SPLITS = ("val", "unlabelled")
#: the built-in estimators compared by default (crm-alpha1 needs a model trained with alpha = 1)
DEFAULT_ESTIMATORS = ("crm", "softmax-threshold", "entropy", "mc-dropout", "tta", "aleatoric", "none")
#: images per network forward of a multi-pass estimator (``per_forward`` x slices): on 2 CPU cores a U-Net at 128^2
#: takes 22.5 ms per image in batches of 4 and 38 ms in batches of 160 (measured, one thread); a GPU wants large ones
IMAGES_PER_FORWARD = {"cpu": 16, "cuda": 256}
RECORD_KIND = "estimator-comparison"
RECORD_VERSION = 1
REFERENCE_HINT = "ssl-bench run --method estimator-reference"


@dataclass
class EstimatorRequest:
    """An estimator to compare: registered ``name`` and its options (its Config fields)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_estimators(names: Sequence[str] | None, sets: dict[str, Any] | None = None) -> list[EstimatorRequest]:
    """``["crm", "tta"]`` + ``{"tta.T": 10}`` -> requests (names checked against the registry, options typed by
    :func:`build_estimator` later). An option for an estimator not compared is an error."""
    chosen = list(names) if names else list(DEFAULT_ESTIMATORS)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"--estimators lists a name twice: {chosen}")
    for n in chosen:
        ESTIMATORS.get(n)  # a clear error listing the registered names
    options: dict[str, dict[str, Any]] = {n: {} for n in chosen}
    for key, value in (sets or {}).items():
        est, _, opt = key.partition(".")
        if not opt or est not in options:
            raise ConfigError(f"--set {key}: expected ESTIMATOR.OPTION with ESTIMATOR one of {chosen}")
        options[est][opt] = value
    return [EstimatorRequest(n, options[n]) for n in chosen]


def batched_options(req: EstimatorRequest, batch_size: int, images_per_forward: int) -> dict[str, Any]:
    """``req.options`` with ``per_forward = images_per_forward // batch_size`` (at least 1) for estimators that
    batch their passes, unless the request sets it."""
    options = dict(req.options)
    fields = {f.name for f in dataclasses.fields(ESTIMATORS.get(req.name).Config)}
    if "per_forward" in fields and "per_forward" not in options:
        options["per_forward"] = max(1, images_per_forward // batch_size)
    return options


def check_requirements(est: UncertaintyEstimator, name: str, net: SegNet, run_dir: Path, params: Any) -> None:
    """Raise a one-line :class:`ConfigError` if ``net`` (of ``run_dir``) lacks what estimator ``name`` needs."""
    from ssl_bench.training.consistency import has_dropout

    have = set(getattr(net, "extra_heads", {}) or {})
    for head in est.required_heads():
        if head.name not in have:
            raise ConfigError(
                f"estimator {name} needs the head {head.name!r}, which the network of {run_dir} lacks "
                f"(heads: {sorted(have) or 'none'}); train a reference model that carries it: {REFERENCE_HINT} "
                f"(add a plugin's estimator with --set params.estimators=[...,{name}] --plugin FILE.py)"
            )
    if est.required_dropout() > 0 and not has_dropout(net):
        raise ConfigError(
            f"estimator {name} needs dropout layers, which the network of {run_dir} lacks; train it with "
            f"{REFERENCE_HINT} (dropout from params.estimators) or --set model.dropout={est.required_dropout():g}"
        )
    alpha = getattr(est, "alpha", None)
    trained = getattr(params, "alpha", None)
    if alpha is not None and trained is not None and float(alpha) != float(trained):
        raise ConfigError(
            f"estimator {name} assumes con/rad heads trained with alpha = {alpha:g}, but {run_dir} used alpha = "
            f"{trained:g}; train a reference model with --set params.alpha={alpha:g}"
        )


def comparison_slices(cfg: Any, adapter: Any, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images ``[N, C, H, W]``, labels ``[N, H, W]`` (uint8) at the training size, and the cases used.

    ``val``: every slice of the val split; ``unlabelled``: the training slices of the patients outside the run's
    labelled budget (with their hidden labels).
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {SPLITS}, got {split!r}")
    if adapter.spec.dims != 2:
        raise ConfigError(
            f"estimator comparison supports 2D runs; dataset {cfg.dataset.name!r} is {adapter.spec.dims}D"
        )
    splits = adapter.splits()
    if split == "val":
        cases = list(splits.get("val") or [])
    else:
        labelled = set(adapter.labelled_patients(cfg.dataset.labeled, cfg.dataset.selection, cfg.seed))
        cases = [c for c in splits["train"] if adapter.group(c) not in labelled]
    if not cases:
        raise DataError(f"dataset {cfg.dataset.name!r} has no {split} cases for this run's labelled budget")
    # val: every axial slice of the loaded volumes (the base adapter's enumeration; a dataset's own training_slices
    # may read training-only slice files, e.g. ACDC's); unlabelled: the slices training drew from
    slices = DatasetAdapter.training_slices(adapter, cases) if split == "val" else adapter.training_slices(cases)
    images, labels = prepare_slices(
        slices.images, slices.labels, tuple(cfg.dataset.image_size), cfg.dataset.image_resize
    )
    assert labels is not None
    return images, labels, cases


class PassCounter:
    """Counts images through a network's main head (one per slice and pass), via a forward hook."""

    def __init__(self, net: SegNet) -> None:
        self.images = 0
        self._handle = net.head.register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, output: torch.Tensor) -> None:
        self.images += int(output.shape[0])

    def close(self) -> None:
        self._handle.remove()


def score_estimator(
    est: UncertaintyEstimator,
    net: SegNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 16,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[EstimatorStats, dict[str, float]]:
    """Run ``est`` over ``images`` ``[N, C, H, W]`` in batches; statistics against ``labels`` ``[N, H, W]`` and cost
    (``passes_per_slice``, ``ms_per_slice``, ``seconds``)."""
    stats = EstimatorStats(int(net.num_classes))
    torch.manual_seed(seed)
    net.eval()
    counter = PassCounter(net)
    elapsed = 0.0
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            t0 = time.perf_counter()
            umap = est.estimate(net, x, None)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            elapsed += time.perf_counter() - t0
            stats.add(umap.prob, umap.certain, umap.score, labels[start : start + batch_size].to(device))
    finally:
        counter.close()
    n = max(1, len(images))
    return stats, {"passes_per_slice": counter.images / n, "ms_per_slice": 1000 * elapsed / n, "seconds": elapsed}


def _run_info(run_dir: Path, cfg: Any, checkpoint: str) -> dict[str, Any]:
    from ssl_bench.core.config import config_hash

    return {
        "run_dir": str(run_dir),
        "run_id": run_dir.name,
        "method": cfg.method,
        "dataset": cfg.dataset.name,
        "labeled": cfg.dataset.labeled,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "backbone": cfg.model.backbone,
        "image_size": list(cfg.dataset.image_size),
        "config_hash": config_hash(cfg),
        "checkpoint": checkpoint,
    }


def compare_run(
    run_dir: str | Path,
    requests: Sequence[EstimatorRequest],
    *,
    split: str = "val",
    device: str = "cpu",
    batch_size: int = 16,
    images_per_forward: int | None = None,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compare ``requests`` on the network of ``run_dir``; returns the record (see the module docstring).

    ``images_per_forward`` sets the ``per_forward`` option of multi-pass estimators (their passes batched into one
    forward) to ``images_per_forward // batch_size`` where the request does not set it; default
    :data:`IMAGES_PER_FORWARD` for the device (a CPU is slower per image in large batches).
    """
    from ssl_bench.reporting.figures import _load_model
    from ssl_bench.reporting.results import _read_run
    from ssl_bench.training.runner import git_state, pick_device

    run_dir = Path(run_dir)
    rec = _read_run(run_dir, run_dir.parent) if run_dir.is_dir() else None
    if rec is None:
        raise ConfigError(f"{run_dir} is not a run folder (needs config.yaml and manifest.json)")
    dev = pick_device(device)
    cfg, adapter, method = _load_model(rec, str(dev))
    net = method.inference_module()
    if not isinstance(net, SegNet):
        raise ConfigError(f"the inference module of {run_dir} is not a SegNet; estimators need one")
    num_classes = adapter.spec.num_classes
    per_image = images_per_forward or IMAGES_PER_FORWARD["cuda" if dev.type == "cuda" else "cpu"]
    built = []
    for req in requests:  # every estimator is built and checked before any work starts
        options = batched_options(req, batch_size, per_image)
        try:
            est = build_estimator(req.name, options, num_classes)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"estimator {req.name}: {exc}") from exc
        check_requirements(est, req.name, net, run_dir, cfg.params)
        built.append((req, est))
    t0 = time.perf_counter()
    images, labels, cases = comparison_slices(cfg, adapter, split)
    data_s = time.perf_counter() - t0
    echo(f"{run_dir.name}: {len(images)} {split} slices of {len(cases)} cases at {tuple(images.shape[2:])}")
    results: dict[str, Any] = {}
    for req, est in built:
        stats, cost = score_estimator(est, net, images, labels, batch_size=batch_size, seed=seed, device=dev)
        summary = stats.summary()
        results[req.name] = {
            "summary": type(est).summary(),
            "options": dataclasses.asdict(est.cfg) if dataclasses.is_dataclass(est.cfg) else {},
            "metrics": summary,
            "curves": stats.curves(),
            "cost": cost,
        }
        a = summary["all"]
        echo(
            f"  {req.name:<18} AUROC {a['auroc']:.3f}  AURC {a['aurc']:.4f}  ECE {a['ece']:.3f}  "
            f"certain {100 * a['certain_fraction']:.1f}%  {cost['passes_per_slice']:.0f} passes, "
            f"{cost['ms_per_slice']:.1f} ms/slice"
        )
    return {
        "kind": RECORD_KIND,
        "version": RECORD_VERSION,
        "run": _run_info(run_dir, cfg, rec.manifest.get("selected_checkpoint", "")),
        "split": split,
        "cases": cases,
        "n_slices": len(images),
        "num_classes": num_classes,
        "label_names": list(adapter.spec.label_names),
        "seed": seed,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "git": git_state(),
        "timing": {"data_s": data_s, "estimators_s": sum(r["cost"]["seconds"] for r in results.values())},
        "estimators": results,
    }
