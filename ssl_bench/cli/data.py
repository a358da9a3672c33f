"""``ssl-bench data {prepare,check,info}``: convert raw data into the fast prepared cache, check a data folder's
integrity, and describe a dataset (what it is, where to download it, its licence and expected layout).

Data roots: ``--data-root DIR``, else the dataset's environment variable (e.g. ``$SSL_BENCH_ACDC``), else
``$SSL_BENCH_DATA/<name>``. ``prepare`` writes to ``--data-root`` or ``$SSL_BENCH_DATA/<name>`` (never to the
dataset's own variable, which usually names the raw copy).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

DATA_DESCRIPTION = """\
Prepare, check and describe the real datasets.

  ssl-bench data info acdc                                      # what it is, download page, licence, layout
  ssl-bench data check acdc --data-root /data/acdc_ssl4mis      # integrity report; exit 1 on problems
  ssl-bench data prepare pancreas-ct --source /data/Pancreas --data-root /data/cache/pancreas-ct

Data folder: --data-root DIR, else the dataset's variable ($SSL_BENCH_ACDC, $SSL_BENCH_PANCREAS,
$SSL_BENCH_PANCREAS_3D, $SSL_BENCH_YORK), else $SSL_BENCH_DATA/<name>.
"""


def _parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--plugin", action="append", default=[], metavar="FILE.py", help="Python file registering extra datasets"
    )
    parent.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parent


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``data`` and its actions on the CLI's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    parent = _parent()
    p = subparsers.add_parser(
        "data",
        help="prepare, check and describe real datasets",
        description=DATA_DESCRIPTION,
        formatter_class=fmt,
    )
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    q = actions.add_parser(
        "prepare",
        parents=[parent],
        help="convert raw data once into a fast cache (one compressed HDF5 per case + dataset.json)",
        description="Convert the raw data in --source into the prepared cache (cases/<case>.h5 and dataset.json with "
        "labels, spacing, source, licence and a preprocessing hash) in --data-root or $SSL_BENCH_DATA/<name>. "
        "Idempotent; an interrupted prepare leaves no dataset.json (so nothing looks complete) and running it "
        "again finishes it, reusing the finished case files.",
    )
    q.add_argument("name", help="dataset name (ssl-bench list datasets)")
    q.add_argument("--source", required=True, type=Path, help="folder with the raw data (any layout the dataset reads)")
    q.add_argument("--data-root", default=None, help="where to write the cache (default $SSL_BENCH_DATA/<name>)")
    q.add_argument("--force", action="store_true", help="rebuild a cache made from another source or preprocessing")
    q = actions.add_parser(
        "check",
        parents=[parent],
        help="integrity report of a data folder (exit 1 on problems)",
        description="Report patients, volumes and slices per split, shapes, label values, spacing ranges, and every "
        "missing, unreadable, duplicate or inconsistent case (naming the file). Exit code 1 if there are problems.",
    )
    q.add_argument("name", help="dataset name (ssl-bench list datasets)")
    q.add_argument("--data-root", default=None, help="data folder (else the dataset's variable or $SSL_BENCH_DATA)")
    q = actions.add_parser(
        "info",
        parents=[parent],
        help="what a dataset is, where to download it, its licence and expected layout",
        description="Describe a dataset: contents, download page, licence, citation, expected layout, split file "
        "and protocols, and where its data folder would be looked for.",
    )
    q.add_argument("name", help="dataset name (ssl-bench list datasets)")
    p.set_defaults(_data_parser=p)
    return p


def resolve_root(cls: type, name: str, explicit: str | os.PathLike[str] | None) -> tuple[Path | None, str]:
    """The data folder for ``cls`` and where it came from (``--data-root``, its variable, ``$SSL_BENCH_DATA``)."""
    if explicit:
        return Path(explicit).expanduser(), "--data-root"
    env = getattr(cls, "root_env", None)
    if env and os.environ.get(env):
        return Path(os.environ[env]).expanduser(), f"${env}"
    if os.environ.get("SSL_BENCH_DATA") and getattr(cls, "needs_root", True):
        return Path(os.environ["SSL_BENCH_DATA"]).expanduser() / name, "$SSL_BENCH_DATA"
    return None, "none"


def cmd_data(args: argparse.Namespace) -> int:
    action = getattr(args, "data_command", None)
    if action is None:
        args._data_parser.print_help()
        return 2
    from ssl_bench.core.registry import DATASETS, normalize_name

    name = normalize_name(args.name)
    cls = DATASETS.get(name)
    if action == "info":
        print(describe(cls, name))
        return 0
    if action == "check":
        return _check(cls, name, args.data_root)
    return _prepare(cls, name, args.source, args.data_root, args.force)


def _instantiate(cls: type, name: str, root: Path | None) -> Any:
    from ssl_bench.core.errors import DataError

    if root is None and getattr(cls, "needs_root", True):
        missing = getattr(cls, "missing", None)
        env = getattr(cls, "root_env", None)
        where = f"pass --data-root DIR{f', set ${env}' if env else ''} or set $SSL_BENCH_DATA"
        if missing is not None:
            raise DataError(missing(f"{cls.info.short}: no data folder given ({where})"))
        raise DataError(f"dataset {name!r} needs its data folder: {where}")
    return cls(root) if root is not None else cls()


def _check(cls: type, name: str, data_root: str | None) -> int:
    from ssl_bench.datasets.common import check_dataset

    root, origin = resolve_root(cls, name, data_root)
    adapter = _instantiate(cls, name, root)
    t0 = time.time()
    interactive = sys.stderr.isatty()
    count = [0]

    def progress(case_id: str) -> None:
        count[0] += 1
        if interactive:
            print(f"\rchecking {count[0]}: {case_id:<40}", end="", file=sys.stderr, flush=True)

    report = check_dataset(adapter, progress)
    if interactive:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    print(report.text())
    print(f"({count[0]} cases checked in {time.time() - t0:.1f} s; data folder from {origin})")
    return 0 if report.ok else 1


def _prepare(cls: type, name: str, source: Path, data_root: str | None, force: bool) -> int:
    from ssl_bench.core.errors import DataError
    from ssl_bench.datasets.common import RealDataset, prepare_dataset

    if not (isinstance(cls, type) and issubclass(cls, RealDataset)):
        raise DataError(f"dataset {name!r} has no prepare step (built-in or plugin data are read as they are)")
    if data_root:
        dest = Path(data_root).expanduser()
    elif os.environ.get("SSL_BENCH_DATA"):
        dest = Path(os.environ["SSL_BENCH_DATA"]).expanduser() / name
    else:
        raise DataError("prepare needs a destination: pass --data-root DIR or set $SSL_BENCH_DATA")
    source = Path(source).expanduser()
    if not source.is_dir():
        raise DataError(cls.missing(f"{cls.info.short} --source {source} is not a folder"))
    t0 = time.time()
    out = prepare_dataset(cls, source, dest, force=force)
    print(f"done in {time.time() - t0:.1f} s; use it with: --dataset {name} --data-root {out}")
    return 0


def describe(cls: type, name: str) -> str:
    """Text of ``ssl-bench data info NAME``."""
    from ssl_bench.datasets.common import RealDataset

    spec = cls.spec
    lines = [f"{name}: {getattr(getattr(cls, 'info', None), 'title', '') or _first_line(cls)}"]
    lines.append(f"  task: {spec.dims}D, {spec.modality}, {spec.num_classes} classes ({', '.join(spec.label_names)})")
    if isinstance(cls, type) and issubclass(cls, RealDataset):
        info = cls.info
        wrap = lambda label, text: textwrap.fill(  # noqa: E731
            text, 116, initial_indent=f"  {label}: ", subsequent_indent=" " * (len(label) + 4)
        )
        lines += [
            wrap("about", info.summary),
            wrap("download", info.download),
            wrap("licence", info.licence),
            wrap("cite", info.citation),
            "  expected layout:",
            *(f"      {line}" for line in info.layout.splitlines()),
            f"      or a folder written by `ssl-bench data prepare {name} --source RAW_DIR --data-root DIR`",
        ]
        from ssl_bench.datasets.common import load_split_file

        sf = load_split_file(cls.split_name)
        counts = "/".join(str(len(sf.split[s])) for s in ("train", "val", "test"))
        lines.append(
            f"  splits: datasets/splits/{sf.path.name} (version {sf.version}, sha256 {sf.sha256[:12]}): "
            f"{counts} train/val/test patients"
        )
        for proto in sf.protocols.values():
            lines.append(wrap(f"protocol {proto.name} (selection={proto.selection})", proto.description))
        root, origin = resolve_root(cls, name, None)
        env = f"--data-root, ${cls.root_env}, or $SSL_BENCH_DATA/{name}"
        state = "not set" if root is None else f"{root} (from {origin}; {'exists' if root.is_dir() else 'missing'})"
        lines.append(f"  data folder: {env}; now: {state}")
    else:
        lines.append("  built-in or plugin data: no download, no data folder needed" if not cls.needs_root else "")
        doc = (cls.__doc__ or "").strip()
        if doc:
            lines.append(textwrap.indent(textwrap.fill(doc.split("\n\n")[0], 116), "  "))
    presets = getattr(cls, "presets", {})
    if presets:
        lines.append("  presets: " + "; ".join(f"{k}: {v}" for k, v in presets.items()))
    return "\n".join(line for line in lines if line)


def _first_line(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else cls.__name__
