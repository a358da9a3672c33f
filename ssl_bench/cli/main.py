"""The ``ssl-bench`` command line.

Errors a user can cause are printed as one line (``error: ...``) with exit code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
import textwrap
from pathlib import Path

from ssl_bench import __version__
from ssl_bench.cli.data import add_data_parser, cmd_data
from ssl_bench.cli.predict import add_predict_parser, cmd_predict
from ssl_bench.core.errors import ConfigError, SSLBenchError

#: OS errors caused by the user's environment, printed as one line (others are bugs and keep their traceback)
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)

DESCRIPTION = """\
ssl-bench: semi-supervised medical image segmentation benchmark (CoraNet, TMI 2021, and baselines).

Typical workflow:
  ssl-bench list methods                                  # what can be run
  ssl-bench run --method unet --dataset cardiac-phantom   # train + test on built-in data (~2 min on 2 cores)
  ssl-bench run --method unet --dataset acdc --data-root /data/acdc_ssl4mis --labeled 7 --seed 1
  ssl-bench resume results/runs/.../<run>                 # continue a killed run
  ssl-bench eval results/runs/.../<run> --split val       # re-score a run
  ssl-bench check --method my-method --plugin my.py       # contract-test your own method
  ssl-bench predict results/runs/.../<run> -i images/ -o preds/   # label maps of your images
  ssl-bench metrics pred/ ref/ --classes 1 2 3            # score any tool's predictions
"""

RUN_EPILOG = """\
presets (--dry-run prints every value a run will use):
  smoke   seconds, for tests:
            {smoke}
  cpu     a reduced real run for 2 CPU cores (default):
            {cpu}
  paper   the paper's protocol (§IV-A), GPU-sized:
            {paper}
  ssl4mis the field's ACDC recipe, HiLab-git/SSL4MIS train_*_2D.py (GPU-sized; acdc: 7 labelled patients;
          ramps are fractions of the run; methods add their reference hyper-parameters):
            {ssl4mis}
  cpu-bench  the ssl4mis recipe shrunk to 2 CPU cores (the CPU benchmark, benchmarks/acdc_cpu.yaml):
            {cpu_bench}
  released   koncle/CoraNet's released 3D code (CoraNet: 60 + 200 epochs of 8 and 6 steps, refresh every 5):
            {released}
A dataset's own preset values win over these: acdc cpu = {acdc_cpu};
3D datasets set patch sizes and a V-Net.

--set KEY=VALUE overrides any config field, typed and checked; sections: dataset, model, optim, trainer,
eval, params (the method's own options; also addressable as method.KEY or <method>.KEY). Examples:
  --set trainer.epochs=5  --set optim.lr=3e-4  --set dataset.image_size=128  --set params.loss=ce+dice

--labeled: a fraction of the training patients (0.2 = 20%) or a number of patients (7). Labelled patients
are the first ones of the training list (SSL4MIS convention; --set dataset.selection=random draws them).

The run folder (printed at start) holds config.yaml, manifest.json, metrics.jsonl, checkpoints/ and
eval/test/{{per_case.csv,summary.json}}. Default location: ./results/runs (or $SSL_BENCH_RESULTS, or --out).
"""


def _plugin_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="Python file registering extra methods/datasets/backbones/estimators (repeatable)",
    )
    parent.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parent


def _runtime_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    parent.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parent.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parent


#: ACDC's own cpu-preset values (datasets/acdc.py), shown in ``run --help`` without importing the dataset modules;
#: a test keeps it equal to the registered preset
ACDC_CPU = "128x128, 25 epochs x 40 steps, batch 4+4, trainer.val_every=5"


def run_epilog() -> str:
    from ssl_bench.core.config import PRESETS, describe_preset

    described = {name.replace("-", "_"): describe_preset(values) for name, values in PRESETS.items()}
    return RUN_EPILOG.format(acdc_cpu=ACDC_CPU, **described)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="ssl-bench", description=DESCRIPTION, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"ssl-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugin, runtime = _plugin_parent(), _runtime_parent()

    p = sub.add_parser(
        "list",
        parents=[plugin],
        help="list registered methods, estimators, datasets, backbones, tables",
        description="List what is registered (built-ins, installed plugins and --plugin files).",
    )
    p.add_argument("kind", choices=["methods", "estimators", "datasets", "backbones", "tables"])
    p.add_argument(
        "pattern",
        nargs="?",
        default=None,
        help="keep names containing PATTERN ('mean' finds mean-teacher), or matching it as a glob ('coranet-seg*')",
    )

    p = sub.add_parser(
        "run",
        parents=[plugin, runtime],
        formatter_class=fmt,
        epilog=run_epilog(),
        help="train a method on a dataset, then evaluate it on the test split",
        description="Train METHOD on DATASET (model selection on the val split), then score the "
        "test split once with the full metric suite.",
    )
    p.add_argument("--method", required=True, help="registered method name (ssl-bench list methods)")
    p.add_argument("--dataset", default="cardiac-phantom", help="registered dataset name (default: cardiac-phantom)")
    p.add_argument("--backbone", default=None, help="network (ssl-bench list backbones); default unet2d")
    p.add_argument("--estimator", default=None, help="uncertainty estimator, for methods that use one")
    p.add_argument(
        "--labeled",
        type=float,
        default=None,
        metavar="FRACTION|COUNT",
        help="labelled budget: fraction (<= 1) or number of patients (> 1)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument(
        "--preset", default="cpu", help="smoke | cpu | paper | ssl4mis | cpu-bench | released (default cpu; see below)"
    )
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--config", default=None, metavar="FILE.yaml", help="YAML file of config overrides")
    p.add_argument("--data-root", default=None, help="dataset folder (else the dataset's environment variable)")
    p.add_argument("--out", default=None, help="results root (default ./results/runs or $SSL_BENCH_RESULTS)")
    p.add_argument(
        "--metrics-backend",
        choices=["ssl-bench", "medpy"],
        default=None,
        help="metric implementation for the test evaluation (= --set eval.metrics_backend=...; default ssl-bench)",
    )
    p.add_argument(
        "--logger",
        default=None,
        metavar="NAMES",
        help="extra loggers, comma-separated: tensorboard (<run>/tensorboard/), csv (<run>/scalars.csv), wandb "
        "(= --set trainer.loggers=...); train.log is always written",
    )
    p.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default=None,
        help="mixed precision (= --set trainer.amp/amp_dtype): auto = bf16 where the GPU supports it, else fp16 "
        "with a GradScaler (the default on CUDA); bf16 also works on the CPU; off = full precision",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    p = sub.add_parser(
        "resume",
        parents=[plugin, runtime],
        help="continue a killed or stopped run",
        description="Continue RUN_DIR from checkpoints/last.pt with its own config and plugin copies; "
        "the result equals an uninterrupted run.",
    )
    p.add_argument("run_dir", type=Path)

    p = sub.add_parser(
        "eval",
        parents=[plugin, runtime],
        help="re-evaluate a run on a split",
        description="Score the run's selected model (best-val or last) on SPLIT; writes "
        "eval/<split>/per_case.csv and summary.json (runs with trainer.select=both: the last model too, "
        "into eval/<split>-last/).",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument(
        "--metrics-backend",
        choices=["ssl-bench", "medpy"],
        default=None,
        help="override the run's eval.metrics_backend for this evaluation",
    )

    p = sub.add_parser(
        "check",
        parents=[plugin],
        help="contract-test a method on tiny synthetic 2D/3D batches",
        description=_module_doc("ssl_bench.training.check") + "\n" + _module_doc("ssl_bench.training.check_estimator"),
        formatter_class=fmt,
    )
    p.add_argument("--method", default=None, help="method to check (omit with --estimator: the estimator alone)")
    p.add_argument(
        "--estimator",
        default=None,
        help="with --method: the method's estimator; alone: an estimator contract check (shapes, value ranges, "
        "determinism under a seed, no gradient, BatchNorm statistics untouched)",
    )
    p.add_argument("--backbone", default=None, help="backbone to check with (default unet2d / unet3d)")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])

    p = sub.add_parser(
        "metrics",
        parents=[plugin],
        help="score label maps from any tool (files or folders)",
        description="Score PRED against REF: files (.nii/.nii.gz, .npy, .h5 with a 'label' dataset) "
        "or folders matched by file name. Distances in mm when spacing is known "
        "(--spacing, else NIfTI headers), else in voxels.",
    )
    p.add_argument("pred", type=Path)
    p.add_argument("ref", type=Path)
    p.add_argument("--classes", type=int, nargs="+", default=None, help="labels to score (default: all > 0 in REF)")
    p.add_argument("--spacing", type=float, nargs="+", default=None, metavar="S", help="voxel size per axis (mm)")
    p.add_argument("--backend", default="ssl-bench", choices=["ssl-bench", "medpy"])
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")

    from ssl_bench.cli.table import add_parsers

    add_parsers(sub, plugin)  # table, leaderboard, figure
    importlib.import_module("ssl_bench.cli.sweep").add_parser(sub, plugin)
    importlib.import_module("ssl_bench.cli.estimators").add_parser(sub, plugin)  # estimators compare / table
    add_data_parser(sub)  # data prepare / check / info
    add_predict_parser(sub, plugin, runtime)  # predict
    return parser


def _load_plugins(paths: list[str]) -> None:
    from ssl_bench.core.registry import load_plugin_file

    for path in paths:
        load_plugin_file(path)


def _module_doc(module: str) -> str:
    """A module's docstring read from its source, without importing it (``check``'s imports torch)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    source = Path(origin).read_text(encoding="utf-8") if origin else ""
    return textwrap.dedent(ast.get_docstring(ast.parse(source), clean=False) or "")


def cmd_list(args: argparse.Namespace) -> int:
    from ssl_bench.cli.listing import list_entries

    entries = list_entries(args.kind, args.pattern, args.plugin)
    if not entries:
        print(f"no {args.kind} registered" + (f" matching {args.pattern!r}" if args.pattern else ""))
        return 0
    width = max(len(name) for name, _ in entries)
    for name, summary in entries:
        print(f"{name:<{width}}  {summary}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from ssl_bench.core.config import parse_set, to_dict
    from ssl_bench.training.runner import resolve_config, start_run

    labeled = args.labeled
    if labeled is not None and labeled > 1 and labeled == int(labeled):
        labeled = int(labeled)
    overrides = parse_set(args.sets)
    if args.metrics_backend:
        overrides = {"eval.metrics_backend": args.metrics_backend, **overrides}
    if args.logger is not None:
        overrides = {"trainer.loggers": [n.strip() for n in args.logger.split(",") if n.strip()], **overrides}
    if args.amp:
        amp = {"trainer.amp": args.amp != "off"} | ({"trainer.amp_dtype": args.amp} if args.amp != "off" else {})
        overrides = {**amp, **overrides}
    cfg = resolve_config(
        args.method,
        args.dataset,
        preset=args.preset,
        seed=args.seed,
        labeled=labeled,
        backbone=args.backbone,
        estimator=args.estimator,
        data_root=args.data_root,
        config_file=args.config,
        overrides=overrides,
    )
    if args.dry_run:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    start_run(
        cfg,
        out=Path(args.out) if args.out else None,
        device=args.device,
        progress=False if args.no_progress else None,
        argv=["ssl-bench", *sys.argv[1:]],
    )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ssl_bench.training.runner import resume_run

    resume_run(args.run_dir, device=args.device, progress=False if args.no_progress else None)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ssl_bench.training.runner import eval_run

    eval_run(
        args.run_dir,
        args.split,
        metrics_backend=args.metrics_backend,
        device=args.device,
        progress=False if args.no_progress else None,
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ssl_bench.core.registry import ESTIMATORS, METHODS
    from ssl_bench.training.check import check_method

    if args.method is None:
        if args.estimator is None:
            raise ConfigError("check needs --method NAME, --estimator NAME, or both (see ssl-bench check --help)")
        ESTIMATORS.get(args.estimator)  # unknown names: one line with suggestions, not a failed check
        from ssl_bench.training.check_estimator import check_estimator

        results = check_estimator(args.estimator, backbone=args.backbone, dims=tuple(args.dims))
    else:
        METHODS.get(args.method)
        if args.estimator is not None:
            ESTIMATORS.get(args.estimator)
        results = check_method(args.method, estimator=args.estimator, backbone=args.backbone, dims=tuple(args.dims))
    for r in results:
        print(f"[{'PASS' if r.ok else 'FAIL'}] {r.dims}D {r.name}" + (f": {r.detail}" if r.detail else ""))
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from ssl_bench.evaluation.metrics_io import score_paths

    rows = score_paths(args.pred, args.ref, args.classes, spacing=args.spacing, backend=args.backend)
    if args.json:
        print(json.dumps(rows, indent=2, default=float))
        return 0
    import pandas as pd

    frame = pd.DataFrame(rows)
    cols = [
        c
        for c in ("case", "class", "dice", "jaccard", "precision", "recall", "hd", "hd95", "asd", "assd")
        if c in frame.columns
    ]
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    unit = rows[0].get("spacing_unit", "voxel") if rows else "voxel"
    print(f"\n{len({r['case'] for r in rows})} case(s); distances in {unit}")
    return 0


COMMANDS = {
    "list": cmd_list,
    "run": cmd_run,
    "resume": cmd_resume,
    "eval": cmd_eval,
    "check": cmd_check,
    "metrics": cmd_metrics,
    "data": cmd_data,
    "predict": cmd_predict,
    **importlib.import_module("ssl_bench.cli.table").COMMANDS,  # table, leaderboard, figure
    **importlib.import_module("ssl_bench.cli.sweep").COMMANDS,
    **importlib.import_module("ssl_bench.cli.estimators").COMMANDS,  # estimators compare / table
}


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    hint = "; free some space (a killed run stays resumable)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"{exc.strerror or exc}{where}{hint}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise ConfigError(f"--threads must be a positive number of CPU threads, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        if args.command in ("run", "resume") and not getattr(args, "dry_run", False):
            from ssl_bench.training.distributed import init_from_env

            init_from_env(args.device)  # under torchrun: join the process group (one run on N processes)
        _load_plugins(getattr(args, "plugin", []))
        return COMMANDS[args.command](args)
    except (SSLBenchError, OSError) as exc:
        if getattr(args, "debug", False) or os.environ.get("SSL_BENCH_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.errno not in USER_OS_ERRORS:
            raise
        message = str(exc) if isinstance(exc, SSLBenchError) else _os_error(exc)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
