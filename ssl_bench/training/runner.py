"""Run orchestration: resolve a config, create the run folder, train, test; resume and re-evaluate runs.

Run folder layout::

    <out>/<dataset>/<method>/<labelled>/seed<k>/<UTC time>-<config hash>/
        config.yaml      the resolved config (reloaded by `resume` and `eval`)
        manifest.json    status (running|finished|failed|interrupted), versions, git sha, plugin hashes, timings
        metrics.jsonl    training and validation log (one JSON object per line)
        plugins/         copies of --plugin files (reloaded by `resume`/`eval`, so the code is identical)
        checkpoints/     last.pt (resume point), best.pt (best validation Dice)
        eval/<split>/    per_case.csv, summary.json

``<out>`` is ``--out``, else ``$SSL_BENCH_RESULTS``, else ``./results/runs``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from ssl_bench.core.config import (
    DERIVED_PRESETS,
    PRESETS,
    RUN_LENGTH_KEYS,
    RunConfig,
    apply_overrides,
    config_hash,
    dump_yaml,
    flatten,
    load_run_config,
    read_yaml_mapping,
    to_dict,
    yaml_error_text,
)
from ssl_bench.core.data import DatasetAdapter
from ssl_bench.core.distributed import is_main, on_main
from ssl_bench.core.errors import ConfigError, DataError, RunDirError, SSLBenchError, TrainingError
from ssl_bench.core.io import atomic_write, atomic_write_json, read_json
from ssl_bench.core.method import Method, MethodContext
from ssl_bench.core.registry import BACKBONES, DATASETS, METHODS, load_plugin_file, normalize_name, plugin_sources
from ssl_bench.core.transforms import IMAGE_RESIZE
from ssl_bench.evaluation.evaluate import evaluate_cases, format_summary_table, summarize, volume_predictor, write_eval
from ssl_bench.training.augment import AUGMENTATIONS
from ssl_bench.training.loggers import check_loggers
from ssl_bench.training.preflight import check_eval_data
from ssl_bench.training.rundir import (
    LOCK_NAME,
    RunLock,
    acquire_lock,
    check_out_root,
    create_run_folder,
    disk_full_message,
    git_state,
    lock_record,
    remove_orphan_temp_files,
    versions,
    write_lock,
)
from ssl_bench.training.streams import derive_seed
from ssl_bench.training.trainer import SELECTIONS, StopRequested, Trainer, seed_everything


def default_out_dir() -> Path:
    return Path(os.environ.get("SSL_BENCH_RESULTS", "results/runs"))


# -- config resolution ----------------------------------------------------------------------------------------


def resolve_config(
    method: str,
    dataset: str,
    *,
    preset: str = "cpu",
    seed: int | None = None,
    labeled: float | None = None,
    backbone: str | None = None,
    estimator: str | None = None,
    data_root: str | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Build the run config: defaults < preset < dataset preset < method preset < config file < flags < --set."""
    method_cls: type[Method] = METHODS.get(method)
    dataset_cls: type[DatasetAdapter] = DATASETS.get(dataset)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    cfg = RunConfig(method=normalize_name(method), preset=preset)
    cfg.dataset.name = normalize_name(dataset)
    cfg.params = method_cls.Config()
    aliases = tuple(a for a in {normalize_name(method), method_cls.config_prefix} if a)
    dims = dataset_cls.spec.dims
    # a global preset's params.* keys are the recipe's defaults for every method that has the option
    fields = (
        {f.name for f in dataclasses.fields(method_cls.Config)}
        if dataclasses.is_dataclass(method_cls.Config)
        else set()
    )
    global_layer = {
        k: v for k, v in PRESETS[preset].items() if not k.startswith("params.") or k.split(".", 1)[1] in fields
    }
    layers: list[dict[str, Any]] = [
        global_layer,
        dataset_cls.presets.get(preset, {}),
        method_preset(method_cls.presets, preset),
        method_cls.presets.get(f"{preset}:{dims}d", {}),  # e.g. CoraNet's "paper:3d" (200 self-training epochs)
    ]
    if config_file:
        layers.append(flatten(read_yaml_mapping(config_file, "--config")))
    flags: dict[str, Any] = {}
    if seed is not None:
        flags["seed"] = seed
    if labeled is not None:
        flags["dataset.labeled"] = labeled
    if backbone is not None:
        flags["model.backbone"] = backbone
    if data_root is not None:
        flags["dataset.root"] = data_root
    if estimator is not None:
        if "estimator" not in method_cls.option_names():
            raise ConfigError(
                f"method {cfg.method!r} does not use an uncertainty estimator (--estimator); "
                "methods that do are listed by `ssl-bench list methods`"
            )
        flags["params.estimator"] = estimator
    layers += [flags, overrides or {}]
    for layer in layers:
        cfg = apply_overrides(cfg, layer, aliases)
    cfg.method, cfg.dataset.name = normalize_name(cfg.method), normalize_name(cfg.dataset.name)
    validate_config(cfg)
    return cfg


def method_preset(presets: dict[str, dict[str, Any]], preset: str) -> dict[str, Any]:
    """A method's layer of ``preset``: its own entry; for a preset derived from another (``cpu-bench`` from
    ``ssl4mis``, :data:`~ssl_bench.core.config.DERIVED_PRESETS`) without an entry of its own, the parent's entry
    without its run-length keys (the shrunk recipe keeps the method's hyper-parameters, not its length)."""
    if preset in presets or preset not in DERIVED_PRESETS:
        return presets.get(preset, {})
    parent = presets.get(DERIVED_PRESETS[preset], {})
    return {k: v for k, v in parent.items() if k not in RUN_LENGTH_KEYS}


def validate_config(cfg: RunConfig, *, training: bool = True) -> None:
    """Checks that need the registries (names, dimensionality) or cross-field knowledge. ``training=False`` (a run
    reloaded to evaluate or predict) skips what only training needs (the loggers' packages)."""
    method_cls = METHODS.get(cfg.method)
    spec = DATASETS.get(cfg.dataset.name).spec
    entry = BACKBONES.entry(cfg.model.backbone)
    if spec.dims not in entry.meta.get("dims", (2, 3)):
        raise ConfigError(
            f"backbone {cfg.model.backbone!r} is {entry.meta['dims']}D only, but dataset "
            f"{cfg.dataset.name!r} trains in {spec.dims}D"
        )
    if spec.dims not in method_cls.dims:
        raise ConfigError(f"method {cfg.method!r} supports {method_cls.dims}D data, dataset is {spec.dims}D")
    checks = [
        (cfg.dataset.augment in AUGMENTATIONS, f"dataset.augment must be one of {AUGMENTATIONS}"),
        (cfg.dataset.image_resize in IMAGE_RESIZE, f"dataset.image_resize must be one of {IMAGE_RESIZE}"),
        (cfg.dataset.selection in ("first", "random"), "dataset.selection must be 'first' or 'random'"),
        (cfg.trainer.select in SELECTIONS, f"trainer.select must be one of {SELECTIONS}"),
        (cfg.eval.metrics_backend in ("ssl-bench", "medpy"), "eval.metrics_backend must be 'ssl-bench' or 'medpy'"),
        (cfg.eval.blend in ("gaussian", "mean"), "eval.blend must be 'gaussian' or 'mean'"),
        (cfg.dataset.unlabeled_views in ("random", "center"), "dataset.unlabeled_views must be 'random' or 'center'"),
        (min(cfg.eval.stride) >= 1 and min(cfg.eval.patch_size) >= 1, "eval.stride and eval.patch_size must be >= 1"),
        (cfg.optim.schedule in ("constant", "poly"), "optim.schedule must be 'constant' or 'poly'"),
        (cfg.optim.name in ("adam", "adamw", "sgd"), "optim.name must be adam, adamw or sgd"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (cfg.trainer.epochs >= 1, "trainer.epochs must be >= 1"),
        (cfg.trainer.batch_size >= 1 and cfg.trainer.unlabeled_batch_size >= 1, "batch sizes must be >= 1"),
        (cfg.trainer.ckpt_every >= 1 and cfg.trainer.log_every >= 1, "ckpt_every and log_every must be >= 1"),
        (cfg.model.norm in ("batch", "instance", "none"), "model.norm must be batch, instance or none"),
        (0.0 <= cfg.model.dropout < 1.0, "model.dropout must be in [0, 1)"),
        (cfg.model.width >= 1 and cfg.model.depth >= 1, "model.width and model.depth must be >= 1"),
        (cfg.dataset.labeled > 0, "dataset.labeled must be a positive fraction (<= 1) or patient count"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if training:
        check_loggers(cfg.trainer.loggers)
    try:
        method_cls.check_config(cfg, spec.dims)
    except ValueError as exc:
        raise ConfigError(f"method {cfg.method!r}: {exc}") from exc
    multiple = 2**cfg.model.depth
    if cfg.model.backbone.startswith("unet") and any(s % multiple for s in cfg.dataset.image_size):
        raise ConfigError(
            f"dataset.image_size {tuple(cfg.dataset.image_size)} must be divisible by 2**model.depth = {multiple}"
        )
    if cfg.model.backbone == "ssl4mis-unet":  # its layout is fixed: 4 poolings, BatchNorm
        if any(s % 16 for s in cfg.dataset.image_size):
            raise ConfigError(f"dataset.image_size {tuple(cfg.dataset.image_size)}: ssl4mis-unet needs multiples of 16")
        if (cfg.model.depth, cfg.model.norm) != (4, "batch"):
            raise ConfigError(
                f"ssl4mis-unet has a fixed depth 4 and BatchNorm; model.depth={cfg.model.depth}, "
                f"model.norm={cfg.model.norm!r} would be ignored (use unet2d to change them)"
            )


# -- building blocks ------------------------------------------------------------------------------------------


def build_adapter(cfg: RunConfig) -> DatasetAdapter:
    cls = DATASETS.get(cfg.dataset.name)
    root = cfg.dataset.root or (os.environ.get(cls.root_env) if cls.root_env else None)
    if not root and cls.needs_root and os.environ.get("SSL_BENCH_DATA"):  # $SSL_BENCH_DATA/<name>
        root = os.path.join(os.path.expanduser(os.environ["SSL_BENCH_DATA"]), cfg.dataset.name)
    if cls.needs_root and not root:
        env = f" or set ${cls.root_env}" if cls.root_env else ""
        where = f"pass --data-root DIR{env} or set $SSL_BENCH_DATA"
        raise DataError(cls.missing(f"dataset {cfg.dataset.name!r} needs its data folder: {where}"))
    return cls(root) if root else cls()


def build_method(cfg: RunConfig, adapter: DatasetAdapter) -> Method:
    """Instantiate the method (network initialisation seeded from ``cfg.seed``)."""
    method_cls = METHODS.get(cfg.method)
    spec = adapter.spec
    backbone = BACKBONES.get(cfg.model.backbone)
    mc = cfg.model
    factory = functools.partial(
        backbone, spec.in_channels, spec.num_classes, width=mc.width, depth=mc.depth, norm=mc.norm, dropout=mc.dropout
    )
    seed_everything(derive_seed(cfg.seed, "init") % 2**32)
    ctx = MethodContext(spec=spec, backbone_factory=factory, epochs=cfg.trainer.epochs)
    try:
        return method_cls(cfg.params, ctx)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"method {cfg.method!r}: {exc}") from exc


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown --device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available (use --device cpu)")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    return dev


# -- run folder -----------------------------------------------------------------------------------------------


def labelled_tag(cfg: RunConfig) -> str:
    if METHODS.get(cfg.method).uses_all_labels:
        return "all"
    value = cfg.dataset.labeled
    return f"lab{int(value)}" if value > 1 else f"lab{value:g}"


def plan_run_dir(cfg: RunConfig, out: Path | None) -> Path:
    """The run folder path for ``cfg``: ``<out>/<dataset>/<method>/<budget>/seed<k>/<UTC stamp>-<config hash>``
    (``create_run_folder`` appends ``-2``, ``-3``, ... if the name is taken when it is created)."""
    base = (out or default_out_dir()) / cfg.dataset.name / cfg.method / labelled_tag(cfg) / f"seed{cfg.seed}"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return base / f"{stamp}-{config_hash(cfg)}"


def copy_plugins(run_dir: Path) -> dict[str, str]:
    """Write the loaded plugins' code (as loaded) into ``run_dir/plugins``, named by hash prefix; name -> sha256."""
    recorded = {}
    for digest, (filename, source) in plugin_sources().items():
        name = filename if filename.startswith(digest[:12]) else f"{digest[:12]}-{filename}"
        atomic_write(run_dir / "plugins" / name, lambda fh, data=source: fh.write(data))
        recorded[name] = digest
    return recorded


def write_manifest(run_dir: Path, **updates: Any) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    manifest = read_json(path) if path.exists() else {}
    manifest.update(updates)
    atomic_write_json(path, manifest)
    return manifest


def load_run(run_dir: Path, *, training: bool = True) -> tuple[RunConfig, dict[str, Any]]:
    """Reload a run folder's plugins, config and manifest (for ``resume`` and ``eval``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run folder not found: {run_dir}")
    for needed in ("config.yaml", "manifest.json"):
        if not (run_dir / needed).exists():
            raise RunDirError(
                f"{run_dir} is not a run folder (no {needed}); pass the folder printed by `ssl-bench run`"
            )
    bad = "manifest.json"
    try:
        manifest = read_json(run_dir / "manifest.json")
        bad = "config.yaml"
        raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        why = yaml_error_text(exc)
        raise RunDirError(f"{run_dir / bad} is unreadable (empty, truncated or corrupt: {why})") from exc
    if not isinstance(manifest, dict) or not isinstance(raw, dict):
        raise RunDirError(f"{run_dir}: manifest.json or config.yaml is not a mapping (corrupt run folder)")
    for name, digest in manifest.get("plugins", {}).items():
        path = run_dir / "plugins" / name
        if not path.exists():
            raise RunDirError(f"plugin copy {path} is missing; the run cannot be reloaded with identical code")
        if load_plugin_file(path) != digest:
            raise RunDirError(f"plugin copy {path} changed since the run started (sha256 mismatch)")
    method_cls = METHODS.get(raw.get("method", ""))
    cfg = load_run_config(run_dir / "config.yaml", method_cls.Config)
    try:
        validate_config(cfg, training=training)
    except SSLBenchError as exc:
        raise ConfigError(f"{run_dir / 'config.yaml'}: {exc}") from exc
    return cfg, manifest


# -- the three workflows --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any] | None
    table: str


Printer = Callable[[str], None]


def start_run(
    cfg: RunConfig,
    *,
    out: Path | None = None,
    device: str = "auto",
    progress: bool | None = None,
    echo: Printer = print,
    argv: list[str] | None = None,
) -> RunResult:
    """Create a run folder for ``cfg``, train and test. Everything that can fail on bad input is checked before
    the folder is created (config, ``--out``, data root, method construction, training data, every val and test
    case). The folder appears with its manifest, config and lock at once (:mod:`.rundir`)."""
    dev = pick_device(device)
    check_out_root(out or default_out_dir())
    adapter = build_adapter(cfg)
    method = build_method(cfg, adapter)
    planned = plan_run_dir(cfg, out)
    trainer = Trainer(cfg, method, adapter, planned, dev, progress)  # loads data: fails before any folder exists
    check_eval_data(cfg, adapter)  # a broken val/test file fails now, not after the training
    record = lock_record("run")

    def populate(folder: Path) -> None:
        write_lock(folder, record)
        write_manifest(
            folder,
            status="running",
            created=_now(),
            command=argv or sys.argv,
            config_hash=config_hash(cfg),
            versions=versions(),
            git=git_state(),
            plugins=copy_plugins(folder),
            host=platform.node(),
            device=str(dev),
            parameters=method.parameter_counts(),
            resumed=[],
            data={
                "split": adapter.split_info(cfg.dataset.selection),
                "labelled_patients": trainer.data.labelled_patients,
                "unlabelled_patients": trainer.data.unlabelled_patients,
                "labelled_samples": len(trainer.data.source_l),
                "unlabelled_samples": 0 if trainer.data.source_u is None else len(trainer.data.source_u),
                "total_steps": trainer.total_steps,
            },
        )
        dump_yaml(cfg, folder / "config.yaml")

    # an identical run may take the name this second: the folder's final name is followed; under torchrun rank 0
    # alone creates it and tells the other ranks
    run_dir = trainer.run_dir = on_main(lambda: create_run_folder(planned, populate))
    echo(f"run folder: {run_dir}")
    return _train_and_test(trainer, run_dir, echo, RunLock(run_dir / LOCK_NAME, record))


def resume_run(
    run_dir: Path, *, device: str = "auto", progress: bool | None = None, echo: Printer = print
) -> RunResult:
    """Continue a killed or stopped run from ``checkpoints/last.pt`` (or re-test a run that finished training)."""
    run_dir = Path(run_dir)
    cfg, manifest = load_run(run_dir)
    if manifest.get("status") == "finished":
        echo(f"run already finished: {run_dir}")
        summary_path = run_dir / "eval" / "test" / "summary.json"
        summary = read_json(summary_path) if summary_path.exists() else None
        return RunResult(run_dir, summary, format_summary_table(summary) if summary else "")
    dev = pick_device(device)
    # refuses while another process trains this run (under torchrun: rank 0 holds it for all ranks)
    held = on_main(lambda: acquire_lock(run_dir, "resume"))  # a refusal stops every rank, not rank 0 alone
    lock = held if is_main() else RunLock(run_dir / LOCK_NAME, lock_record("resume"))  # the others release nothing
    try:
        adapter = build_adapter(cfg)
        method = build_method(cfg, adapter)
        trainer = Trainer(cfg, method, adapter, run_dir, dev, progress)
        if is_main():
            remove_orphan_temp_files(run_dir)
        last = run_dir / "checkpoints" / "last.pt"
        if last.exists():
            trainer.load_checkpoint(last)
            echo(f"resuming {run_dir} at step {trainer.step}/{trainer.total_steps}")
        else:  # Trainer.fit restarts the log of a run that begins at step 0
            echo(f"no checkpoint in {run_dir}; starting its training from step 0")
        write_manifest(
            run_dir, status="running", resumed=[*manifest.get("resumed", []), {"time": _now(), "step": trainer.step}]
        )
    except BaseException:
        lock.release()
        raise
    return _train_and_test(trainer, run_dir, echo, lock)


def _mark(run_dir: Path, **updates: Any) -> None:
    """Best-effort manifest update on the way out of a failure (the disk may be full)."""
    try:
        write_manifest(run_dir, **updates)
    except OSError:
        pass


def _train_and_test(trainer: Trainer, run_dir: Path, echo: Printer, lock: RunLock) -> RunResult:
    try:
        return _train_and_test_locked(trainer, run_dir, echo)
    except OSError as exc:
        if not disk_full_message(exc, run_dir):
            raise
        _mark(run_dir, status="interrupted", error=f"{type(exc).__name__}: {exc}")
        raise RunDirError(disk_full_message(exc, run_dir)) from exc
    finally:
        lock.release()


def _train_and_test_locked(trainer: Trainer, run_dir: Path, echo: Printer) -> RunResult:
    try:
        trainer.fit()
    except StopRequested as exc:
        _mark(run_dir, status="interrupted", error=str(exc))
        raise SSLBenchError(f"{exc}; continue with: ssl-bench resume {run_dir}") from exc
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        _mark(run_dir, status=status, error=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, SSLBenchError):
            hint = "" if isinstance(exc, TrainingError) else f"; `ssl-bench resume {run_dir}` continues it"
            raise type(exc)(f"{exc} (run folder {run_dir}{hint})") from exc
        raise
    t1 = time.time()
    if trainer.cfg.trainer.select == "both":  # the last model first, while it is loaded (FIELD.md pitfall 1)
        last = f"last (step {trainer.step})"
        _, last_table = evaluate_split(
            trainer.cfg,
            trainer.method,
            trainer.adapter,
            run_dir,
            "test",
            trainer.device,
            checkpoint=last,
            progress=trainer.progress,
            folder="test-last",
        )
        echo(f"\nTest split, model: {last}, Dice % per class:\n{last_table}\n")
    chosen = trainer.select_final_model()
    summary, table = evaluate_split(
        trainer.cfg,
        trainer.method,
        trainer.adapter,
        run_dir,
        "test",
        trainer.device,
        checkpoint=chosen,
        progress=trainer.progress,
    )
    # train_s: fit()'s wall time over every segment of the run (a resumed run's earlier segments included)
    timings = {"train_s": round(trainer.train_seconds, 2), "test_eval_s": round(time.time() - t1, 2)}
    write_manifest(run_dir, status="finished", finished=_now(), timings=timings, selected_checkpoint=chosen, error=None)
    echo(f"\nTest split ({summary['n_cases']} cases, model: {chosen}), Dice % per class:\n{table}\n")
    echo(f"results: {run_dir / 'eval' / 'test'}")
    return RunResult(run_dir, summary, table)


def evaluate_split(
    cfg: RunConfig,
    method: Method,
    adapter: DatasetAdapter,
    run_dir: Path,
    split: str,
    device: torch.device,
    checkpoint: str = "",
    progress: bool | None = None,
    folder: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Score ``split`` with the full metric suite; writes ``eval/<folder or split>/{per_case.csv, summary.json}``."""
    from tqdm.auto import tqdm

    cases = adapter.splits().get(split)
    if not cases:
        raise DataError(
            f"dataset {cfg.dataset.name!r} has no cases in split {split!r} "
            f"(splits: {', '.join(k for k, v in adapter.splits().items() if v)})"
        )
    method.eval()
    bar = functools.partial(
        tqdm, desc=f"eval {split}", unit="case", disable=not progress if progress is not None else None
    )
    predictor = volume_predictor(
        method.predict, adapter.spec.dims, cfg.eval, tuple(cfg.dataset.image_size), device, cfg.dataset.image_resize
    )
    rows = evaluate_cases(
        predictor, adapter, cases, per_slice=cfg.eval.per_slice, backend=cfg.eval.metrics_backend, progress=bar
    )
    summary = summarize(
        rows,
        adapter.spec.label_names,
        adapter.spacing_unit,
        extra={
            "split": split,
            "checkpoint": checkpoint,
            "metrics_backend": cfg.eval.metrics_backend,
            "per_slice": cfg.eval.per_slice,
            "method": cfg.method,
            "dataset": cfg.dataset.name,
            "labeled": cfg.dataset.labeled,
            "seed": cfg.seed,
            "preset": cfg.preset,
            "config_hash": config_hash(cfg),
            "config": to_dict(cfg),
        },
    )
    write_eval(run_dir / "eval" / (folder or split), rows, summary)
    return summary, format_summary_table(summary)


def eval_run(
    run_dir: Path,
    split: str = "test",
    *,
    metrics_backend: str | None = None,
    device: str = "auto",
    progress: bool | None = None,
    echo: Printer = print,
) -> RunResult:
    """Re-evaluate a run's selected model (best-val or last, per its config) on ``split``.

    With a ``metrics_backend`` other than the run's, results go to ``eval/<split>-<backend>/`` so the run's own
    numbers are kept. A run that selects on validation but has no ``best.pt`` is scored with its last model into
    ``eval/<split>-last/`` (never over the val-selected scores), unless the run itself tested its last model.
    """
    run_dir = Path(run_dir)
    cfg, manifest = load_run(run_dir, training=False)
    folder = split
    if metrics_backend and metrics_backend != cfg.eval.metrics_backend:
        cfg.eval.metrics_backend, folder = metrics_backend, f"{split}-{metrics_backend}"
    dev = pick_device(device)
    best, last = run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt"
    path = best if (cfg.trainer.select in ("best-val", "both") and best.exists()) else last
    if not path.exists():
        raise RunDirError(f"{run_dir} has no checkpoint to evaluate (checkpoints/last.pt missing)")
    own_last = str(manifest.get("selected_checkpoint") or "").startswith("last")
    if path == last and cfg.trainer.select != "last" and not own_last:
        folder = f"{folder}-last"
        echo(f"note: {run_dir} has no checkpoints/best.pt: scoring its last model into eval/{folder}/")
    lock = acquire_lock(run_dir, "eval")
    try:
        return _eval_locked(cfg, run_dir, split, folder, path, dev, progress, echo)
    finally:
        lock.release()


def _eval_locked(
    cfg: RunConfig, run_dir: Path, split: str, folder: str, path: Path, dev: torch.device, progress: bool | None,
    echo: Printer,
) -> RunResult:  # fmt: skip
    adapter = build_adapter(cfg)
    method = build_method(cfg, adapter).to(dev)
    best, last = run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt"
    state = _load_state(path, dev)
    method.load_state_dict(state["model"])
    label = f"{path.stem} (step {state.get('step', state.get('position', {}).get('step'))})"
    summary, table = evaluate_split(
        cfg, method, adapter, run_dir, split, dev, checkpoint=label, progress=progress, folder=folder
    )
    echo(f"{split} split ({summary['n_cases']} cases, model: {label}), Dice % per class:\n{table}")
    echo(f"results: {run_dir / 'eval' / folder}")
    if cfg.trainer.select == "both" and path == best and last.exists():  # the last model too, as the run did
        state = _load_state(last, dev)
        method.load_state_dict(state["model"])
        last_label = f"last (step {state.get('step', state.get('position', {}).get('step'))})"
        _, last_table = evaluate_split(
            cfg, method, adapter, run_dir, split, dev, checkpoint=last_label, progress=progress, folder=f"{folder}-last"
        )
        echo(f"{split} split, model: {last_label}, Dice % per class:\n{last_table}")
    return RunResult(run_dir, summary, table)


def _load_state(path: Path, dev: torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=dev, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise RunDirError(f"cannot read checkpoint {path} (truncated or corrupt: {type(exc).__name__})") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
