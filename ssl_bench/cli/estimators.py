"""``ssl-bench estimators compare`` and ``ssl-bench estimators table``: parsers and command functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMPARE_EPILOG = """\
what is measured, per estimator (pixel error = pseudo-label != label; per class = pixels predicted as that class):
  certain %         fraction of pixels the estimator calls certain
  PPV/TPR/CSI       of the pseudo-label inside the certain region, per class (CoraNet Fig. 3)
  AUROC, AUPRC      the uncertainty score as a detector of pixel errors (ties count half)
  AURC, E-AURC      area under the risk-coverage curve, and its excess over the optimal ranking
  ECE               expected calibration error of the top-class probability (15 bins)
  cost              network passes per slice, ms per slice
Estimators without a score (none) are ranked by their mask.

the reference model (one network with every head the built-ins need: CRM con/rad, aleatoric logvar, dropout):
  ssl-bench run --method estimator-reference --dataset acdc --labeled 7 --seed 0
  (a plugin's heads: --plugin F.py --set 'params.estimators=[crm,aleatoric,mc-dropout,my-est]')

examples:
  ssl-bench estimators compare RUN_DIR                               # the 7 built-ins on the val split
  ssl-bench estimators compare RUN_DIR --plugin examples/margin_estimator.py --add margin
  ssl-bench estimators compare RUN_DIR --estimators crm,entropy --split unlabelled --set entropy.T=4
  ssl-bench estimators compare RUN0 RUN1 RUN2 --out results/estimators   # seeds: mean ± std
  ssl-bench estimators table results/estimators/records --format tex     # re-render from records

outputs (in --out, default RUN_DIR/estimators/<split> for one run, else results/estimators):
  records/<run_id>-<split>.json, estimators-<split>.{md,tex,csv}, estimators-<split>-{risk-coverage,reliability,
  pl-quality}.{png,pdf}
"""


def add_parser(sub: argparse._SubParsersAction, plugin: argparse.ArgumentParser) -> None:
    """Register ``estimators compare`` / ``estimators table``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "estimators",
        help="compare uncertainty estimators on one trained network (error detection, risk-coverage, calibration)",
        description="Compare uncertainty estimators on the same trained weights, with known labels.",
    )
    esub = p.add_subparsers(dest="estimators_command", metavar="SUBCOMMAND", required=True)
    c = esub.add_parser(
        "compare",
        parents=[plugin],
        formatter_class=fmt,
        epilog=COMPARE_EPILOG,
        help="score estimators on the network of one or more runs (seeds)",
        description="Load each RUN_DIR's selected network, run every estimator over the val split (or the "
        "unlabelled training slices with their hidden labels) and write records, a table and figures.",
    )
    c.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    c.add_argument(
        "--estimators",
        default=None,
        metavar="A,B,...",
        help="estimators to compare (default: crm,softmax-threshold,entropy,mc-dropout,tta,aleatoric,none)",
    )
    c.add_argument("--add", default=None, metavar="A,B,...", help="estimators compared in addition (e.g. a plugin's)")
    c.add_argument("--split", default="val", choices=["val", "unlabelled"], help="slices scored (default val)")
    c.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="EST.OPTION=VALUE",
        help="an estimator option, e.g. tta.T=10 (repeatable)",
    )
    c.add_argument("--out", type=Path, default=None, help="output folder (see below)")
    c.add_argument("--format", default="md", choices=["md", "tex", "csv"], help="printed table format")
    c.add_argument("--batch-size", type=int, default=16, help="slices per estimator call (default 16)")
    c.add_argument(
        "--images-per-forward",
        type=int,
        default=None,
        metavar="N",
        help="batch a multi-pass estimator's passes (MC dropout, entropy) so that a forward holds N images: "
        "per_forward = N // batch-size unless set with --set (default 16 on a CPU, 256 on CUDA)",
    )
    c.add_argument("--seed", type=int, default=0, help="random seed every estimator starts from (default 0)")
    c.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    c.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    c.add_argument("--no-figures", action="store_true", help="write records and tables only")
    t = esub.add_parser(
        "table",
        parents=[plugin],
        help="aggregate comparison records (files or folders) into a table and figures",
        description="Aggregate estimator comparison records (mean ± std over reference models) and print the table.",
    )
    t.add_argument("records", nargs="+", type=Path, metavar="RECORD")
    t.add_argument("--format", default="md", choices=["md", "tex", "csv"])
    t.add_argument("--out", type=Path, default=None, help="also write tables and figures with this path stem")


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def cmd_estimators(args: argparse.Namespace) -> int:
    if args.estimators_command == "table":
        return _cmd_table(args)
    import yaml

    from ssl_bench.core.config import parse_set
    from ssl_bench.core.errors import ConfigError
    from ssl_bench.core.io import atomic_write_json
    from ssl_bench.reporting import estimator_compare as ec
    from ssl_bench.reporting import estimator_report as er

    if args.batch_size < 1 or (args.images_per_forward is not None and args.images_per_forward < 1):
        raise ConfigError("--batch-size and --images-per-forward must be >= 1")
    names = _names(args.estimators) or list(ec.DEFAULT_ESTIMATORS)
    names += [n for n in _names(args.add) if n not in names]
    sets = {k: yaml.safe_load(v) for k, v in parse_set(args.sets).items()}
    requests = ec.parse_estimators(names, sets)
    for run_dir in args.run_dirs:
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(
                f"{run_dir} is not a run folder (no config.yaml); pass the folder `ssl-bench run` printed"
            )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or (
        args.run_dirs[0] / "estimators" / args.split if len(args.run_dirs) == 1 else Path("results/estimators")
    )
    records = []
    for run_dir in args.run_dirs:
        record = ec.compare_run(
            run_dir,
            requests,
            split=args.split,
            device=args.device,
            batch_size=args.batch_size,
            images_per_forward=args.images_per_forward,
            seed=args.seed,
        )
        path = out / "records" / f"{record['run']['run_id']}-{args.split}.json"
        atomic_write_json(path, record)
        print(f"record: {path}", file=sys.stderr)
        records.append(record)
    stem = out / f"estimators-{args.split}"
    written = er.write_tables(records, stem)
    if not args.no_figures:
        written += er.write_figures(records, stem)
    print(er.render_table(records, args.format), end="")
    print(f"written: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from ssl_bench.reporting import estimator_report as er

    records = er.load_records(args.records)
    print(er.render_table(records, args.format), end="")
    if args.out:
        written = er.write_tables(records, args.out) + er.write_figures(records, args.out)
        print(json.dumps([str(p) for p in written]), file=sys.stderr)
    return 0


COMMANDS = {"estimators": cmd_estimators}
