"""``ssl-bench table``, ``leaderboard`` and ``figure``: argument parsers and command functions.

:func:`add_parsers` is called by :func:`ssl_bench.cli.build_parser`; :data:`COMMANDS` maps the sub-command names
to their functions (merged into ``ssl_bench.cli.COMMANDS``). Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

TABLE_EPILOG = """\
cells: per run the mean over test cases, then mean ± std over seeds (n = runs found); the paper's value and
Δ = measured − paper beside it; bold = best of the column; † = paired Wilcoxon test on per-case values against
the table's baseline row, p < 0.05. Only finished runs count (manifest status "finished" + eval/test scores).

examples:
  ssl-bench table IX                                  # ACDC table from results/runs + results/records
  ssl-bench table IX --missing                        # the `ssl-bench run` commands that would fill it
  ssl-bench table IX --run-missing --jobs 2           # run them (skips finished, resumes killed runs)
  ssl-bench table IX --run-missing --executor slurm --partition gpu --gpus 1   # as one SLURM job array
  ssl-bench table IX --preset smoke --dataset acdc=cardiac-phantom   # the protocol on the built-in phantom
  ssl-bench table IX --export-records                 # copy the used runs' records to results/records
  ssl-bench table benchmarks/acdc_cpu.yaml --preset cpu-bench --convergence   # had each row's val curve flattened?
  ssl-bench table VI --add-estimator margin --plugin examples/margin_estimator.py --missing   # a row of yours
  ssl-bench table benchmarks/acdc_baselines.yaml --seeds 0   # a table of your own (same YAML format)
"""


LEADERBOARD_EPILOG = """\
groups: a variant (runs whose config differs from what their preset resolves to, e.g. made with
--set trainer.epochs=40 or --set params.joint_bn=false) is ranked in a group of its own, never with the plain
preset; fully supervised (every label) is shown as its group's upper bound, not ranked; n = runs, marked * below
--min-n.

examples:
  ssl-bench leaderboard                                   # every group, Markdown
  ssl-bench leaderboard --dataset acdc --labeled 7        # one dataset and budget
  ssl-bench leaderboard --format html --out lb.html       # a sortable page to open in a browser
  ssl-bench leaderboard --metric hd95_vox --min-n 2       # lower is better for distances
"""


def _results_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help="run folders to read, searched recursively (repeatable; default: results/runs or $SSL_BENCH_RESULTS, "
        "and results/records)",
    )
    p.add_argument("--verbose", action="store_true", help="list every run skipped as unreadable or incomplete (stderr)")


def _choice(kind: str, value: str, known: list[str]) -> None:
    """Exit-2 error for an unknown ``value`` of option ``kind``, with the closest known names."""
    import difflib

    from ssl_bench.core.errors import ConfigError

    close = difflib.get_close_matches(value, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown {kind} {value!r}: {hint}known: {', '.join(known)}")


def check_report_args(args: argparse.Namespace) -> None:
    """Names given to ``table``/``leaderboard`` must exist (before any run is read): ``--results`` folders,
    ``--preset``, ``--metric``, ``--dataset``."""
    from ssl_bench.core.config import PRESETS
    from ssl_bench.core.errors import ConfigError
    from ssl_bench.core.registry import DATASETS, normalize_name

    for folder in args.results or []:
        if not folder.is_dir():
            raise ConfigError(f"--results {folder}: no such folder (give folders holding run folders)")
    if args.preset is not None and args.preset not in PRESETS:
        _choice("--preset", args.preset, list(PRESETS))
    metric = getattr(args, "metric", None)
    if metric is not None:
        from ssl_bench.reporting.results import METRIC_ORDER

        if metric not in METRIC_ORDER:
            _choice("--metric", metric, list(METRIC_ORDER))
    check_set_keys(getattr(args, "sets", None) or [])
    datasets = args.dataset if isinstance(args.dataset, list) else [args.dataset] if args.dataset else []
    for item in datasets:
        for name in item.split("=") if "=" in item else [item]:
            if normalize_name(name) not in DATASETS.names():
                _choice("--dataset", name, DATASETS.names())


def check_set_keys(items: list[str]) -> None:
    """``--set`` keys of the config's fixed sections (dataset, model, optim, trainer, eval, seed, preset) must exist
    and their values parse; ``params.*`` and ``<method>.*`` keys depend on each row's method and are checked there."""
    import dataclasses

    from ssl_bench.core.config import RunConfig, apply_overrides, parse_set

    fixed = {f.name for f in dataclasses.fields(RunConfig)} - {"params", "method"}
    overrides = parse_set(items)
    apply_overrides(RunConfig(), {k: v for k, v in overrides.items() if k.split(".")[0] in fixed})
    from ssl_bench.core.registry import METHODS, normalize_name

    heads = fixed | {"params", "method", *METHODS.names()}
    unknown = [k for k in overrides if k.split(".")[0] not in fixed and normalize_name(k.split(".")[0]) not in heads]
    if unknown:
        from ssl_bench.core.errors import ConfigError

        raise ConfigError(
            f"--set {unknown[0]}: unknown config key; sections: {', '.join(sorted(fixed))}, params, <method>"
        )


def report_skipped(args: argparse.Namespace, dirs) -> None:
    """The stderr footnote: runs left out of the table/leaderboard because they are unreadable or incomplete."""
    from ssl_bench.reporting.results import skipped_note, skipped_runs

    note = skipped_note(skipped_runs(dirs), verbose=args.verbose)
    if note:
        print(note, file=sys.stderr)


def add_parsers(sub: argparse._SubParsersAction, plugin: argparse.ArgumentParser) -> None:
    """Register the ``table``, ``leaderboard`` and ``figure`` sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "table",
        parents=[plugin],
        formatter_class=fmt,
        epilog=TABLE_EPILOG,
        help="render a paper table (II ... IX) from finished runs; list or run the missing ones",
        description="Render table ID (ssl-bench list tables) from finished run folders, print it and write "
        "results/tables/<ID>-<preset>.{md,tex,csv} and .provenance.json (run ids, config hashes, git sha per cell).",
    )
    p.add_argument(
        "table_id", metavar="ID", help="table id: II, III, IV, V, VI, VII, VIII, IX, or a spec file (FILE.yaml)"
    )
    _results_arg(p)
    p.add_argument("--preset", default="cpu", help="preset of the runs to use and to start (default cpu)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override every cell's runs were made with (as `ssl-bench run --set`; repeatable); "
        "the files get a suffix, e.g. IX-cpu-iters_per_epoch160",
    )
    p.add_argument("--format", default="md", choices=["md", "tex", "csv", "html"], help="printed format")
    p.add_argument(
        "--add-estimator",
        action="append",
        default=[],
        metavar="NAME",
        help="add a row: the table's CRM row with estimator NAME, no paper values (VI, VIII; a plugin's needs "
        "--plugin; repeatable); files are named <ID>+NAME-<preset>",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per cell (default: the table's)")
    p.add_argument(
        "--dataset",
        action="append",
        default=None,
        metavar="[FROM=]TO",
        help="substitute a dataset, e.g. acdc=cardiac-phantom (TO alone: every dataset of the table)",
    )
    p.add_argument("--tables-dir", type=Path, default=Path("results/tables"), help="where files are written")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    p.add_argument(
        "--missing",
        action="store_true",
        help="print the commands that would fill the empty cells, and the time a run of each setting took where one "
        "has finished (its manifest's timings)",
    )
    p.add_argument("--run-missing", action="store_true", help="run those commands, then render the table")
    p.add_argument(
        "--convergence",
        action="store_true",
        help="instead of the table: per row, the validation Dice of its runs at 25/50/75/100 %% of training, the "
        "best, the gain over the last 25 %% and its trend (flat below 0.5 points); writes <stem>.convergence.md/.csv",
    )
    p.add_argument(
        "--order",
        choices=["row", "seed"],
        default="row",
        help="order of --missing/--run-missing after the resumes: row (every seed of a row, then the next row; "
        "default) or seed (seed 0 of every row first, then seed 1, ...: a sweep stopped half-way has a run per row)",
    )
    p.add_argument("--out", type=Path, default=None, help="results root new runs go to (default: first --results)")
    from ssl_bench.cli.sweep import add_executor_args

    add_executor_args(p, jobs_help="parallel local runs for --run-missing (threads split; default 1)")  # as sweep
    p.add_argument(
        "--export-records",
        nargs="?",
        const=Path("results/records"),
        default=None,
        type=Path,
        metavar="DIR",
        help="copy the lightweight files of the table's runs (never checkpoints) to DIR (default results/records)",
    )

    p = sub.add_parser(
        "leaderboard",
        parents=[plugin],
        formatter_class=fmt,
        epilog=LEADERBOARD_EPILOG,
        help="rank every method/estimator/backbone setting found in the results",
        description="Every setting (dataset, labelled budget, preset, method, estimator, alpha, backbone, variant) "
        "with finished runs, ranked by the foreground mean of METRIC (mean ± std over seeds) within its group "
        "(dataset, labelled budget, preset, variant), with compute cost and provenance.",
    )
    _results_arg(p)
    p.add_argument("--dataset", default=None, help="only this dataset")
    p.add_argument("--labeled", type=float, default=None, metavar="FRACTION|COUNT", help="only this labelled budget")
    p.add_argument("--preset", default=None, help="only runs of this preset")
    p.add_argument("--metric", default="dice", help="dice, jaccard, precision, recall, hd95_vox, asd_vox, ...")
    p.add_argument("--min-n", type=int, default=3, metavar="N", help="mark settings with fewer than N runs (default 3)")
    p.add_argument(
        "--format",
        default="md",
        choices=["md", "csv", "html", "tex"],
        help="md: a table per group; csv: every column; html: one self-contained sortable page (default md)",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the leaderboard to this file")

    p = sub.add_parser(
        "figure",
        parents=[plugin],
        help="paper figures from run folders (Fig. 3-9, training curves), PNG and PDF",
        description="fig3: PPV/TPR/CSI of the initial pseudo-labels per estimator (bars); fig4: their course over "
        "self-training; masks: uncertain-region masks over test images (Fig. 5/8; needs checkpoints); overlays: "
        "contours of several runs vs ground truth (Fig. 6/7/9; needs checkpoints); curves: training loss and "
        "validation Dice.",
    )
    p.add_argument("kind", choices=["fig3", "fig4", "masks", "overlays", "curves"])
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help="output file (PNG and PDF are both written)")
    p.add_argument("--case", action="append", default=None, help="test case(s) to show (masks, overlays)")
    p.add_argument("--region", default="certain", choices=["certain", "all"], help="fig3/fig4 pixels scored")
    p.add_argument("--device", default="cpu")


def cmd_table(args: argparse.Namespace) -> int:
    from ssl_bench.core.config import parse_set
    from ssl_bench.reporting import tables
    from ssl_bench.reporting.results import _as_dirs, export_records

    check_report_args(args)
    spec = tables.get_spec(args.table_id)
    if args.add_estimator:
        spec = tables.add_estimator_rows(spec, args.add_estimator)
    dirs = _as_dirs(args.results)
    dataset_map = tables.parse_dataset_map(args.dataset)
    overrides = parse_set(args.sets)
    out = args.out or dirs[0]
    if out not in dirs:
        dirs = [out, *dirs]

    def build() -> tables.TableResult:
        return tables.build_table(
            spec, dirs, preset=args.preset, seeds=args.seeds, dataset_map=dataset_map, overrides=overrides
        )

    result = build()
    exported: list = []  # records written as runs finished
    if args.missing or args.run_missing:
        plan = tables.plan_missing(result, stale_s=args.stale_after, order=args.order)
        print(tables.render_missing(result, plan, out, args.plugin), end="")
        if args.missing and not args.run_missing:
            return 0
        if args.executor == "slurm" or args.submitit_cluster:  # one job array; the table is rendered when it ends
            from ssl_bench.cli.sweep import slurm_options, submit_and_report

            code = submit_and_report(plan, out, args, slurm_options(args))
            if not (args.wait or args.submitit_cluster):
                return code
            result = build()
            print(tables.render(result, args.format), end="")
            return code
        on_finish = None
        if args.export_records is not None:  # each finished run's record is kept at once (durable if killed)
            lock = threading.Lock()

            def on_finish(entry: tables.MissingRun, code: int) -> None:
                if code == 0:
                    with lock:
                        exported.extend(export_records(tables.finished_runs_of(entry, out), args.export_records))

        done = tables.run_missing(
            plan,
            out,
            jobs=args.jobs or 1,
            threads=args.threads,
            plugins=args.plugin,
            device=args.device,
            on_finish=on_finish,
        )
        failed = [entry for entry, code in done if code != 0]
        print(f"# {len(done) - len(failed)} run(s) finished, {len(failed)} failed")
        result = build()  # with the new runs
    if args.convergence:
        return _print_convergence(result, args)
    print(tables.render(result, args.format), end="")
    report_skipped(args, dirs)
    if not args.no_write:
        written = tables.write_table(result, args.tables_dir, formats=[args.format])
        print(f"\nwritten: {', '.join(str(p) for p in written)}", file=sys.stderr)
    if args.export_records is not None:
        used = {r.run_id: r for c in result.cells.values() for r in c.runs}
        copied = exported + export_records(used.values(), args.export_records)
        print(f"records: {len(copied)} new under {args.export_records} ({len(used)} runs used)", file=sys.stderr)
    return 0


def _print_convergence(result, args: argparse.Namespace) -> int:
    """``table --convergence``: print the rows' validation-curve summary; write it as Markdown and CSV."""
    from ssl_bench.core.io import atomic_write_text
    from ssl_bench.reporting.tables import render_convergence, row_convergence

    rows = row_convergence(result)  # each run's metrics.jsonl read once for the printed and the written files
    print(render_convergence(result, "csv" if args.format == "csv" else "md", rows), end="")
    if not args.no_write:
        written = []
        for fmt in ("md", "csv"):
            path = args.tables_dir / f"{result.stem}.convergence.{fmt}"
            atomic_write_text(path, render_convergence(result, fmt, rows))
            written.append(str(path))
        print(f"\nwritten: {', '.join(written)}", file=sys.stderr)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ssl_bench.core.errors import ConfigError
    from ssl_bench.reporting.leaderboard import leaderboard, render_leaderboard

    check_report_args(args)
    labeled = args.labeled
    if labeled is not None and labeled > 1 and labeled == int(labeled):
        labeled = int(labeled)
    if args.min_n < 1:
        raise ConfigError(f"--min-n must be at least 1, got {args.min_n}")
    frame = leaderboard(
        args.results, dataset=args.dataset, labeled=labeled, preset=args.preset, metric=args.metric, min_n=args.min_n
    )
    text = render_leaderboard(frame, args.format, metric=args.metric, min_n=args.min_n)
    print(text, end="")
    report_skipped(args, args.results)
    if args.out:
        from ssl_bench.core.io import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from ssl_bench.reporting import figures

    written = figures.make_figure(
        args.kind, args.run_dirs, out=args.out, cases=args.case, region=args.region, device=args.device
    )
    for path in written:
        print(path)
    return 0


COMMANDS = {"table": cmd_table, "leaderboard": cmd_leaderboard, "figure": cmd_figure}
