"""Typed run configuration: dataclasses, presets, ``--set`` overrides, YAML round trip.

Precedence (lowest to highest): dataclass defaults -> global preset -> the dataset's preset -> the method's preset
-> ``--set key=value`` overrides. Every key is checked against the dataclass fields (unknown keys are errors with
suggestions) and every value is converted to the field's type.

Presets:
    ``smoke``  seconds: for tests and ``ssl-bench check``-like runs (tiny images, a few steps);
    ``cpu``    a real but reduced run for 2 CPU cores (narrow U-Net, small images, fixed iterations per epoch);
    ``paper``  the paper's protocol (§IV-A: U-Net width 64, Adam lr 1e-3 betas (0.5, 0.999), batch 4; GPU-sized).

Method-specific options live in the ``params`` section, typed by the method's own ``Config`` dataclass.
``--set params.x=1``, ``--set method.x=1`` and ``--set <method-family>.x=1`` (e.g. ``coranet.alpha=2``) all
address it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssl_bench.core.errors import ConfigError


@dataclass
class DataConfig:
    """Dataset and labelled budget."""

    name: str = "cardiac-phantom"
    #: data folder (None: the dataset's environment variable, or built-in data); not part of the config hash
    root: str | None = None
    #: labelled budget: a fraction (<= 1.0) of the training patients, or a patient count (> 1)
    labeled: float = 0.2
    #: "first": first patients of the training list (SSL4MIS convention, nested budgets); "random": seeded draw
    selection: str = "first"
    #: 2D slice size used for training and inference (slices are resized; predictions resized back)
    image_size: tuple[int, int] = (96, 96)
    #: training augmentation (training.augment.AUGMENTATIONS), 2D only: "none", "flip-rot" (random rot90 + horizontal
    #: flip) or "ssl4mis" (SSL4MIS's RandomGenerator: p 1/2 rot90 + flip, p 1/4 rotation by -20..19 degrees, order 0)
    augment: str = "flip-rot"
    #: 2D slice resize to image_size and of predictions back (core.transforms): "bilinear" (images and logits;
    #: labels nearest-exact) or "nearest" (SSL4MIS: scipy zoom order 0 of images, labels and arg-max predictions)
    image_resize: str = "bilinear"
    #: 3D training crop size (Z, Y, X) (paper: 96^3, "only random crop")
    patch_size: tuple[int, int, int] = (96, 96, 96)
    #: 3D unlabelled views: "random" crops like the labelled ones, or one fixed "center" crop per volume
    #: (the released CoraNet code)
    unlabeled_views: str = "random"


@dataclass
class ModelConfig:
    """Backbone network."""

    backbone: str = "unet2d"
    width: int = 64
    depth: int = 4
    norm: str = "batch"
    dropout: float = 0.0


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (paper §IV-A: Adam, lr 1e-3, betas (0.5, 0.999))."""

    name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    #: "constant" or "poly" ((1 - step/total)^0.9, as SSL4MIS)
    schedule: str = "constant"
    #: max gradient norm, or None for no clipping
    grad_clip: float | None = None


@dataclass
class TrainerConfig:
    """Training loop. An epoch is ``iters_per_epoch`` steps, or one pass over the driving stream if None
    (the unlabelled stream for semi-supervised stages, else the labelled one)."""

    epochs: int = 100
    iters_per_epoch: int | None = None
    batch_size: int = 4
    unlabeled_batch_size: int = 4
    #: validate every N epochs (0: never; then the last model is used)
    val_every: int = 1
    #: write checkpoints/last.pt every N steps (also at every epoch end)
    ckpt_every: int = 200
    #: a metrics.jsonl record and a train.log line every N steps (and at every validation)
    log_every: int = 10
    #: extra loggers of the same scalars (training.loggers): any of "tensorboard", "csv", "wandb"
    loggers: tuple[str, ...] = ()
    #: model evaluated on the test split: "best-val" (highest mean foreground val Dice) or "last"
    select: str = "best-val"
    #: mixed precision (CUDA; on the CPU only with amp_dtype=bf16)
    amp: bool = True
    #: "auto" (bf16 where the GPU supports it, else fp16 with a GradScaler), "bf16" or "fp16"
    amp_dtype: str = "auto"
    #: CUDA: channels-last layout of 2D batches and weights, pinned host batches
    channels_last: bool = True
    #: CUDA: cuDNN autotuning (faster; its algorithm choice is not deterministic, so off by default: exact resume)
    cudnn_benchmark: bool = False
    pin_memory: bool = True
    #: stop with an error at the first non-finite loss
    stop_on_nan: bool = True


@dataclass
class EvalConfig:
    """Evaluation."""

    #: "ssl-bench" (fast, equal to medpy to 1e-6) or "medpy" (medpy itself)
    metrics_backend: str = "ssl-bench"
    #: score each 2D slice as its own case instead of whole volumes (volumes: the SSL4MIS/ACDC convention)
    per_slice: bool = False
    batch_size: int = 16
    #: CUDA: predict under autocast (bf16 where supported, else fp16); off keeps test scores in full precision
    amp: bool = False
    #: validate on at most this many val volumes during training (None: all)
    val_cases: int | None = None
    #: 3D sliding-window inference: patch and stride per axis (Z, Y, X), blending "gaussian" or "mean"
    #: (paper preset: stride (4, 16, 16), i.e. CoraNet's 16 in-plane and 4 along z; ~20x slower than the default)
    patch_size: tuple[int, int, int] = (96, 96, 96)
    stride: tuple[int, int, int] = (48, 48, 48)
    blend: str = "gaussian"


@dataclass
class RunConfig:
    """Everything that determines a run's result (hashed into the run folder name)."""

    method: str = "unet"
    preset: str = "cpu"
    seed: int = 0
    dataset: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: method-specific options (an instance of the method's Config dataclass)
    params: Any = None


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset.image_size": (32, 32),
        "model.width": 8,
        "model.depth": 2,
        "trainer.epochs": 2,
        "trainer.iters_per_epoch": 3,
        "trainer.batch_size": 2,
        "trainer.unlabeled_batch_size": 2,
        "trainer.ckpt_every": 2,
        "trainer.log_every": 1,
        "eval.val_cases": 2,
    },
    "cpu": {
        "dataset.image_size": (96, 96),
        "model.width": 16,
        "model.depth": 4,
        "trainer.epochs": 10,
        "trainer.iters_per_epoch": 40,
        "trainer.batch_size": 8,
        "trainer.unlabeled_batch_size": 8,
        "trainer.val_every": 2,
        # separate labelled / unlabelled forwards, as every committed cpu record was made (the methods' default is
        # the references' one joint forward since the BatchNorm check of issue #13)
        "params.joint_bn": False,
    },
    "paper": {
        "dataset.image_size": (256, 256),
        "model.width": 64,
        "model.depth": 4,
        "optim.name": "adam",
        "optim.lr": 1e-3,
        "optim.betas": (0.5, 0.999),
        "trainer.epochs": 100,
        "trainer.iters_per_epoch": None,
        "trainer.batch_size": 4,
        "trainer.unlabeled_batch_size": 4,
        "eval.stride": (4, 16, 16),
    },
    # koncle/CoraNet's released 3D code (REFERENCE §1.5): Adam 1e-3, betas (0.5, 0.999), no lr schedule, batch 8 + 8,
    # no augmentation, 96^3 crops, sliding window stride (4, 16, 16), the last model tested (its best.pth is written
    # unconditionally); CoraNet adds its 60 + 200-epoch schedule of 8- and 6-step epochs (methods/coranet.py)
    "released": {
        "dataset.image_size": (256, 256),
        "dataset.augment": "none",
        "dataset.patch_size": (96, 96, 96),
        "model.width": 16,
        "optim.name": "adam",
        "optim.lr": 1e-3,
        "optim.betas": (0.5, 0.999),
        "optim.weight_decay": 0.0,
        "optim.schedule": "constant",
        "trainer.batch_size": 8,
        "trainer.unlabeled_batch_size": 8,
        "trainer.val_every": 20,
        "trainer.select": "last",
        "eval.patch_size": (96, 96, 96),
        "eval.stride": (4, 16, 16),
    },
    # HiLab-git/SSL4MIS's train_*_2D.py defaults (the field's ACDC recipe): SGD 0.01 poly, 0.5 (CE + Dice) with its
    # squared-denominator Dice, batch 12 + 12 in one student forward, 256^2 slices zoomed with order 0, its
    # augmentation, its U-Net, 30,000 iterations validated every 200; consistency methods: 0.1 x sigmoid ramp over
    # the whole run in steps of 150 iterations. Keys under params.* apply to methods that have the option.
    "ssl4mis": {
        "dataset.image_size": (256, 256),
        "dataset.augment": "ssl4mis",
        "dataset.image_resize": "nearest",
        "model.backbone": "ssl4mis-unet",
        "model.width": 16,
        "model.dropout": 0.0,
        "optim.name": "sgd",
        "optim.lr": 0.01,
        "optim.momentum": 0.9,
        "optim.weight_decay": 1e-4,
        "optim.schedule": "poly",
        "trainer.epochs": 150,
        "trainer.iters_per_epoch": 200,
        "trainer.batch_size": 12,
        "trainer.unlabeled_batch_size": 12,
        "trainer.val_every": 1,
        "trainer.select": "both",
        "params.loss": "ce+dice-ssl4mis",
        "params.joint_bn": True,
        "params.weight": 0.1,
        "params.rampup": 1.0,
        "params.ramp_levels": 200,
    },
}

# The SSL4MIS recipe shrunk to a 2-core CPU (results/README.md, "Convergence study"): 128^2 slices, batch 4 + 4,
# 4,000 iterations validated every 200; everything else (network, loss, optimiser, augmentation, ramps as fractions
# of the run, both checkpoints tested) as the ssl4mis preset.
#: presets derived from another: a method without an entry for the child gets its parent entry minus RUN_LENGTH_KEYS
DERIVED_PRESETS: dict[str, str] = {"cpu-bench": "ssl4mis"}
#: keys that set a run's length (a shrunk recipe sets its own)
RUN_LENGTH_KEYS = ("trainer.epochs", "trainer.iters_per_epoch", "params.pretrain_epochs")

PRESETS["cpu-bench"] = {
    **PRESETS["ssl4mis"],
    "dataset.image_size": (128, 128),
    "trainer.epochs": 20,
    "trainer.iters_per_epoch": 200,
    "trainer.batch_size": 4,
    "trainer.unlabeled_batch_size": 4,
}


def describe_preset(values: dict[str, Any]) -> str:
    """One line of what a preset layer sets, for ``--help``: ``"96x96, width 16, 10 epochs x 40 steps, batch 8+8"``."""
    rest = dict(values)
    parts = []
    if "dataset.image_size" in rest:
        parts.append("x".join(str(v) for v in rest.pop("dataset.image_size")))
    if "model.width" in rest:
        parts.append(f"width {rest.pop('model.width')}")
    for key in ("trainer.ckpt_every", "trainer.log_every"):  # bookkeeping, not the protocol
        rest.pop(key, None)
    if rest.get("model.depth") == ModelConfig.depth:
        del rest["model.depth"]
    if "optim.name" in rest:
        text = f"{rest.pop('optim.name')}"
        if "optim.lr" in rest:
            text += f" lr {rest.pop('optim.lr'):g}"
        if "optim.betas" in rest:
            text += f" betas {tuple(rest.pop('optim.betas'))}"
        parts.append(text)
    if "trainer.epochs" in rest:
        epochs = rest.pop("trainer.epochs")
        if "trainer.iters_per_epoch" in rest:
            iters = rest.pop("trainer.iters_per_epoch")
            parts.append(f"{epochs} epochs x {iters} steps" if iters else f"{epochs} epochs (full passes)")
        else:
            parts.append(f"{epochs} epochs")
    if "trainer.batch_size" in rest:
        batch = f"batch {rest.pop('trainer.batch_size')}"
        if "trainer.unlabeled_batch_size" in rest:
            batch += f"+{rest.pop('trainer.unlabeled_batch_size')}"
        parts.append(batch)
    parts += [f"{key}={format_config_value(value)}" for key, value in rest.items()]
    return ", ".join(parts)


def format_config_value(value: Any) -> str:
    """A config value as ``--set`` takes it: sizes as ``128x128``, numbers as ``160`` or ``0.001``."""
    if isinstance(value, (list, tuple)):
        return "x".join(format_config_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- typed conversion -----------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to annotation ``tp``; raises ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: cannot use {value!r} as {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith(("[", "(")) else value.split(",")
            if isinstance(value, str):
                value = [value]
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list for {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], key) for v in value)
        if args and len(value) != len(args):
            if len(value) == 1 and len(set(args)) == 1:  # "96" -> (96, 96)
                value = list(value) * len(args)
            else:
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(coerce(v, a, key) for v, a in zip(value, args or [Any] * len(value)))
    if origin in (list,):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, args[0] if args else Any, key) for v in value]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping; unknown keys are errors."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in (data or {}).items():
        if key not in names:
            raise ConfigError(_unknown_key_message(prefix + key, [prefix + n for n in names]))
        kwargs[key] = coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of YAML-safe values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the ``params`` section is flattened too)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"unknown config key {key!r}.{hint} Valid keys here: {', '.join(sorted(known))}"


# -- overrides --------------------------------------------------------------------------------------------------


def parse_set(items: list[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (values stay strings; typed later)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set trainer.epochs=5")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {item!r}: empty key")
        out[key.strip()] = value.strip()
    return out


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], params_aliases: tuple[str, ...] = ()) -> RunConfig:
    """Return a copy of ``cfg`` with dotted-key ``overrides`` applied (typed, checked)."""
    cfg = copy.deepcopy(cfg)
    aliases = {"method", *params_aliases}
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) > 1 and parts[0] in aliases:
            parts = ["params", *parts[1:]]
        _set_path(cfg, parts, value, key)
    return cfg


def _set_path(obj: Any, parts: list[str], value: Any, full_key: str) -> None:
    head, rest = parts[0], parts[1:]
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"config key {full_key!r}: {'.'.join(parts)} is not a section")
    names = [f.name for f in dataclasses.fields(obj)]
    if head not in names:
        prefix = full_key[: len(full_key) - len(".".join(parts))]
        raise ConfigError(_unknown_key_message(full_key, [prefix + n for n in names]))
    if rest and isinstance(getattr(obj, head), dict):  # free-form options, e.g. params.estimator_options.T=4
        options = dict(getattr(obj, head))
        options[".".join(rest)] = yaml.safe_load(value) if isinstance(value, str) else value
        setattr(obj, head, options)
        return
    if rest:
        child = getattr(obj, head)
        if child is None:
            raise ConfigError(f"config key {full_key!r}: this method has no options ({head} is empty)")
        _set_path(child, rest, value, full_key)
        return
    tp = _hints(type(obj))[head]
    if dataclasses.is_dataclass(getattr(obj, head)) and not isinstance(value, dict):
        raise ConfigError(f"config key {full_key!r} is a section; set one of its fields, e.g. {full_key}.<field>")
    setattr(obj, head, coerce(value, tp, full_key))


def config_hash(cfg: RunConfig) -> str:
    """8-hex-digit hash of everything that affects results (excludes the data root)."""
    data = to_dict(cfg)
    data["dataset"].pop("root", None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def dump_yaml(cfg: RunConfig, path: Path) -> None:
    from ssl_bench.core.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def yaml_error_text(exc: Exception) -> str:
    """A YAML parse error on one line: the problem and its line/column (PyYAML's text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(exc, 'problem', None) or ' '.join(str(exc).split())}{where}"


def read_yaml_mapping(
    path: str | Path, what: str, *, empty_ok: bool = True, keys: Iterable[str] = ()
) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; :class:`ConfigError` naming ``what`` (e.g. "sweep spec") and the file
    if it cannot be read, does not parse (line/column given) or holds something other than a mapping (then the
    expected ``keys``, if given, are listed)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {yaml_error_text(exc)}") from exc
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        of = f" of {', '.join(keys)}" if keys else ""
        raise ConfigError(f"{what} {path}: expected a YAML mapping{of}, got {type(data).__name__}")
    return data


def load_run_config(path: Path, params_cls: type | None) -> RunConfig:
    """Read a run's ``config.yaml`` back into a :class:`RunConfig` (strictly typed)."""
    data = read_yaml_mapping(path, "config", empty_ok=False)
    params = data.pop("params", None)
    try:
        cfg = from_dict(RunConfig, data)
        if params_cls is not None:
            cfg.params = from_dict(params_cls, params or {}, prefix="params.")
    except ConfigError as exc:  # name the file: it is the run's own config, not a --set
        raise ConfigError(f"{path}: {exc}") from exc
    return cfg
