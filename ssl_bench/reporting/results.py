"""Finished runs as tidy pandas DataFrames — the one way notebooks, tables and users' scripts read results.

A *run folder* is any folder holding ``config.yaml`` and ``manifest.json`` (see
:mod:`ssl_bench.training.runner`); its test scores are ``eval/test/per_case.csv`` and
``eval/test/summary.json``. Log files are never parsed here, except ``metrics.jsonl`` by
:func:`load_metrics_log` (training curves and pseudo-label quality, for figures).

Results live in two places (both read by default):

* ``results/runs`` (or ``$SSL_BENCH_RESULTS``): full run folders with checkpoints, git-ignored;
* ``results/records``: the lightweight records of finished runs (config, manifest, metrics log, test scores —
  never checkpoints or data), committed so that tables regenerate anywhere (:func:`export_records`).

A run present in both (same folder name) is read once, from the first source.

Public functions::

    load_runs(results_dir=None, level="case")   # run x case x class x metric (or run x class x metric)
    load_run_summaries(results_dir=None)        # one row per run: settings, status, cost, foreground means
    find_runs(results_dir=None)                 # RunRecord objects (config, manifest, lazily read scores)
    skipped_runs(results_dir=None)              # (folder, reason) of runs that cannot be read or are incomplete

Only complete runs count: a run whose ``config.yaml`` or ``manifest.json`` cannot be read, or whose status is
``finished`` but whose test scores are missing, unreadable or cut short (``per_case.csv`` rows != cases x classes
of ``summary.json``), is never aggregated; :func:`skipped_runs` lists them so that tables can say so.
    export_records(runs, dest)                  # copy finished runs' lightweight files to results/records
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ssl_bench.core.config import flatten
from ssl_bench.core.errors import RunDirError

__all__ = [
    "KEY_FIELDS",
    "RunRecord",
    "default_results_dirs",
    "export_records",
    "find_runs",
    "run_order",
    "skipped_note",
    "skipped_runs",
    "load_metrics_log",
    "load_run_summaries",
    "load_runs",
]

#: run-level fields read from each run's ``config.yaml`` (column name -> dotted config key)
KEY_FIELDS: dict[str, str] = {
    "dataset": "dataset.name",
    "method": "method",
    "labeled": "dataset.labeled",
    "preset": "preset",
    "seed": "seed",
    "backbone": "model.backbone",
    "estimator": "params.estimator",
    "alpha": "params.alpha",
}

#: files of a finished run that make its durable record (relative to the run folder)
RECORD_FILES: tuple[str, ...] = (
    "config.yaml",
    "manifest.json",
    "metrics.jsonl",
    "eval/test/per_case.csv",
    "eval/test/summary.json",
    # the last checkpoint's scores, where trainer.select=both (the ssl4mis / cpu-bench presets)
    "eval/test-last/per_case.csv",
    "eval/test-last/summary.json",
)

RECORDS_DIR = Path("results/records")


def default_results_dirs() -> list[Path]:
    """``$SSL_BENCH_RESULTS`` (else ``results/runs``) and ``results/records`` (where it exists)."""
    from ssl_bench.training.runner import default_out_dir

    dirs = [default_out_dir()]
    if RECORDS_DIR.is_dir() and RECORDS_DIR.resolve() != dirs[0].resolve():
        dirs.append(RECORDS_DIR)
    return dirs


def _as_dirs(results_dir: str | Path | Iterable[str | Path] | None) -> list[Path]:
    if results_dir is None:
        return default_results_dirs()
    if isinstance(results_dir, (str, Path)):
        return [Path(results_dir)]
    return [Path(p) for p in results_dir]


def setting_hash(config: dict[str, Any]) -> str:
    """8-hex hash of a run's config without its seed and data root: runs of one setting over seeds share it."""
    flat = {k: v for k, v in flatten(config).items() if k not in ("seed", "dataset.root")}
    blob = json.dumps(flat, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


@dataclass
class RunRecord:
    """One run folder: its config (flattened), manifest and, lazily, its test scores."""

    path: Path
    source: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    setting: str = ""
    _per_case: pd.DataFrame | None = field(default=None, repr=False)
    _summary: dict[str, Any] | None = field(default=None, repr=False)
    _problem: str | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        """The run folder's name (``<UTC time>-<config hash>``): unique across sources."""
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def finished(self) -> bool:
        """Status ``finished`` with complete, readable test scores (:meth:`problem` is None)."""
        return self.status == "finished" and self.problem() is None

    def problem(self) -> str | None:
        """Why this run's test scores cannot be used (``eval/test``, and ``eval/test-last`` where present), or None."""
        if self._problem is None:
            self._problem = next((p for p in map(self._scores_problem, ("test", "test-last")) if p), "")
        return self._problem or None

    def _scores_problem(self, folder: str) -> str | None:
        where = self.path / "eval" / folder
        if folder != "test" and not where.exists():
            return None
        try:
            summary = json.loads((where / "summary.json").read_text())
            text = (where / "per_case.csv").read_text()
        except FileNotFoundError as exc:
            return f"eval/{folder}/{Path(str(exc.filename)).name} is missing"
        except (OSError, ValueError) as exc:
            return f"eval/{folder}/summary.json is unreadable ({type(exc).__name__})"
        if not isinstance(summary, dict) or not isinstance(summary.get("classes"), dict) or "n_cases" not in summary:
            return f"eval/{folder}/summary.json is incomplete (no n_cases/classes)"
        if not text.endswith("\n"):
            return f"eval/{folder}/per_case.csv is cut mid-line"
        try:
            pc = pd.read_csv(io.StringIO(text), dtype={"case": str})
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            return f"eval/{folder}/per_case.csv is unreadable ({type(exc).__name__})"
        n_cases, n_classes = int(summary["n_cases"]), len(summary["classes"])
        if (
            not {"case", "class"} <= set(pc.columns)
            or len(pc) != n_cases * n_classes
            or pc["case"].nunique() != n_cases
        ):
            return (
                f"eval/{folder}/per_case.csv has {len(pc)} rows, summary.json says {n_cases} cases x {n_classes} "
                "classes (cut short?)"
            )
        if folder == "test":
            self._summary, self._per_case = summary, pc
        return None

    @property
    def flat(self) -> dict[str, Any]:
        return self.config

    def get(self, key: str, default: Any = None) -> Any:
        """A dotted config value (``"params.alpha"``)."""
        return self.config.get(key, default)

    def content_sha256(self, names: Sequence[str]) -> str:
        """sha256 (hex) of the named files of the run folder, each as its name and bytes in the given order (absent
        ones as their name alone): identifies what a result read, wherever the folder lies (run or record copy)."""
        digest = hashlib.sha256()
        for name in names:
            file = self.path / name
            digest.update(name.encode() + b"\0")
            if file.is_file():
                digest.update(file.read_bytes())
            digest.update(b"\0")
        return digest.hexdigest()

    @property
    def fields(self) -> dict[str, Any]:
        """The :data:`KEY_FIELDS` of this run plus provenance (config hash, git sha)."""
        out = {name: self.config.get(key) for name, key in KEY_FIELDS.items()}
        git = self.manifest.get("git") or {}
        out.update(
            run_id=self.run_id,
            config_hash=self.manifest.get("config_hash"),
            setting=self.setting,
            git_sha=git.get("sha"),
            git_dirty=git.get("dirty"),
            status=self.status,
            path=str(self.path),
        )
        return out

    def summary(self, split: str = "test") -> dict[str, Any]:
        if split != "test":
            return json.loads((self.path / "eval" / split / "summary.json").read_text())
        if self._summary is None:
            path = self.path / "eval" / "test" / "summary.json"
            if not path.exists():
                raise RunDirError(f"{self.path} has no test scores (eval/test/summary.json); is it finished?")
            self._summary = json.loads(path.read_text())
        return self._summary

    def per_case(self, split: str = "test") -> pd.DataFrame:
        """``per_case.csv`` as written by :func:`~ssl_bench.evaluation.evaluate.write_eval` (case, class, metrics)."""
        if split != "test":
            return pd.read_csv(self.path / "eval" / split / "per_case.csv", dtype={"case": str})
        if self._per_case is None:
            path = self.path / "eval" / "test" / "per_case.csv"
            if not path.exists():
                raise RunDirError(f"{self.path} has no eval/test/per_case.csv")
            self._per_case = pd.read_csv(path, dtype={"case": str})
        return self._per_case

    def label_names(self) -> dict[int, str]:
        try:
            return {int(k): v["name"] for k, v in self.summary()["classes"].items()}
        except (RunDirError, KeyError, ValueError, OSError):
            return {}


def _read_run(path: Path, source: Path) -> RunRecord | None:
    try:
        raw = yaml.safe_load((path / "config.yaml").read_text()) or {}
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, yaml.YAMLError, json.JSONDecodeError):
        return None  # a folder being written or broken: not a readable run
    if not isinstance(raw, dict) or not isinstance(manifest, dict):
        return None
    return RunRecord(path=path, source=source, config=flatten(raw), manifest=manifest, setting=setting_hash(raw))


def find_runs(
    results_dir: str | Path | Iterable[str | Path] | None = None, *, status: str | None = None
) -> list[RunRecord]:
    """Every run folder under ``results_dir`` (default :func:`default_results_dirs`), sorted by run id.

    Args:
        results_dir: one folder or several; each is searched recursively (``results/`` finds both ``runs`` and
            ``records``). A folder that does not exist holds no runs.
        status: keep only runs with this manifest status (``"finished"`` also requires the test scores).
    """
    seen: dict[str, RunRecord] = {}
    for path, root in _run_folders(results_dir):
        rec = _read_run(path, root)
        if rec is not None and rec.run_id not in seen:
            seen[rec.run_id] = rec
    runs = sorted(seen.values(), key=lambda r: r.run_id)
    if status == "finished":
        return [r for r in runs if r.finished]
    if status is not None:
        return [r for r in runs if r.status == status]
    return runs


def _run_folders(results_dir: str | Path | Iterable[str | Path] | None) -> Iterable[tuple[Path, Path]]:
    """(run folder, results root) of every folder holding config.yaml and manifest.json; hidden folders skipped."""
    for root in _as_dirs(results_dir):
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            if "config.yaml" in filenames and "manifest.json" in filenames:
                dirnames[:] = []  # a run folder holds no runs
                yield Path(dirpath), root
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))


def skipped_runs(results_dir: str | Path | Iterable[str | Path] | None = None) -> list[tuple[Path, str]]:
    """Run folders that :func:`find_runs` ``status="finished"`` leaves out although they may hold results: an
    unreadable ``config.yaml``/``manifest.json``, or status ``finished`` with missing, unreadable or incomplete
    test scores. Returns ``(folder, reason)`` pairs."""
    out = []
    for path, root in _run_folders(results_dir):
        rec = _read_run(path, root)
        if rec is None:
            out.append((path, "config.yaml or manifest.json is unreadable (empty, truncated or corrupt)"))
        elif rec.status == "finished" and rec.problem():
            out.append((path, str(rec.problem())))
    return out


def skipped_note(skipped: Sequence[tuple[Path, str]], verbose: bool = False) -> str:
    """The one-line footnote for :func:`skipped_runs` (with ``verbose``: one more line per run); "" if none."""
    if not skipped:
        return ""
    first = f"{skipped[0][0].name}: {skipped[0][1]}"
    more = "" if len(skipped) == 1 else f"; and {len(skipped) - 1} more"
    head = f"{len(skipped)} run(s) skipped (unreadable or incomplete): {first}{more}"
    if not verbose:
        return head + " (see --verbose)"
    return "\n".join([head, *(f"  skipped {path}: {reason}" for path, reason in skipped)])


def run_order(rec: RunRecord) -> tuple[str, str]:
    """Sort key of repeated runs of one setting and seed: the last one in this order wins (newest finished, then
    newest started)."""
    return (str(rec.manifest.get("finished") or ""), rec.run_id)


def _filter(runs: list[RunRecord], filters: dict[str, Any]) -> list[RunRecord]:
    def ok(rec: RunRecord) -> bool:
        for name, want in filters.items():
            if want is None:
                continue
            key = KEY_FIELDS.get(name, name)
            have = rec.get(key)
            wants = want if isinstance(want, (list, tuple, set)) else [want]
            if not any(values_equal(have, w) for w in wants):
                return False
        return True

    return [r for r in runs if ok(r)]


def values_equal(a: Any, b: Any) -> bool:
    """Config value equality: numbers compared as floats (``0.2 == 0.20``, ``12 == 12.0``), names normalised."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):  # YAML lists vs resolved tuples
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, str) and isinstance(b, (int, float)) or isinstance(b, str) and isinstance(a, (int, float)):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except ValueError:
            return False
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().lower().replace("_", "-") == b.strip().lower().replace("_", "-")
    return a == b


METRIC_ORDER = (
    "dice",
    "jaccard",
    "precision",
    "recall",
    "hd",
    "hd95",
    "asd",
    "assd",
    "hd_vox",
    "hd95_vox",
    "asd_vox",
    "assd_vox",
)


def load_runs(
    results_dir: str | Path | Iterable[str | Path] | None = None,
    *,
    level: str = "case",
    metrics: Sequence[str] | None = None,
    status: str = "finished",
    **filters: Any,
) -> pd.DataFrame:
    """Test scores of finished runs as one tidy DataFrame.

    Args:
        results_dir: folder(s) to search (default ``results/runs`` or ``$SSL_BENCH_RESULTS``, and
            ``results/records``).
        level: ``"case"``: one row per run x case x class x metric with its ``value`` (the per-case numbers);
            ``"run"``: one row per run x class x metric with ``mean``, ``std`` (over cases, ddof=1), ``n`` (cases
            with a finite value) and ``n_nan``, plus a foreground-mean row per run and metric (``class`` <NA>,
            ``class_name`` ``"mean"``: the mean over classes of the per-class means, as in ``summary.json``).
        metrics: metrics to keep (default all in ``per_case.csv``: dice, jaccard, precision, recall, hd, hd95,
            asd, assd and the ``*_vox`` distances).
        status: ``"finished"`` (default); other statuses have no test scores.
        **filters: equality filters on run fields: ``dataset``, ``method``, ``labeled``, ``preset``, ``seed``,
            ``backbone``, ``estimator``, ``alpha`` or any dotted config key passed as a dict
            (``**{"params.loss": "ce"}``); a list means "any of".

    Returns:
        Columns: ``run_id, dataset, method, labeled, preset, seed, backbone, estimator, alpha, config_hash,
        setting`` (config hash without seed: runs of one setting over seeds share it), ``git_sha, case, class,
        class_name, metric, value`` (``level="case"``) or ``... class, class_name, metric, mean, std, n, n_nan``
        (``level="run"``). Overlap metrics are fractions in [0, 1]; distance units are in ``summary.json``
        (``distance_units``: mm for ``hd`` etc. where the dataset has a spacing, voxels for ``*_vox``).
    """
    if level not in ("case", "run"):
        raise ValueError(f"level must be 'case' or 'run', got {level!r}")
    runs = _filter(find_runs(results_dir, status=status), filters)
    id_cols = [*KEY_FIELDS, "run_id", "config_hash", "setting", "git_sha"]
    frames = []
    for rec in runs:
        fields = rec.fields
        names = rec.label_names()
        pc = rec.per_case()
        keep = [m for m in METRIC_ORDER if m in pc.columns and (metrics is None or m in metrics)]
        long = pc.melt(id_vars=["case", "class"], value_vars=keep, var_name="metric", value_name="value")
        long["class"] = long["class"].astype(int)
        long["class_name"] = long["class"].map(names).fillna(long["class"].astype(str))
        if level == "run":
            long = _run_level(long)
        for col in reversed(id_cols):
            long.insert(0, col, fields[col])
        frames.append(long)
    if not frames:
        cols = ["case", "class", "class_name", "metric", "value"] if level == "case" else []
        if level == "run":
            cols = ["class", "class_name", "metric", "mean", "std", "n", "n_nan"]
        return pd.DataFrame(columns=[*id_cols, *cols])
    out = pd.concat(frames, ignore_index=True)
    if level == "run":
        out["class"] = out["class"].astype("Int64")
    return out


def _run_level(long: pd.DataFrame) -> pd.DataFrame:
    def stats(values: pd.Series) -> pd.Series:
        finite = values.dropna()
        n = int(finite.size)
        return pd.Series(
            {
                "mean": float(finite.mean()) if n else math.nan,
                "std": float(finite.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan),
                "n": n,
                "n_nan": int(values.size - n),
            }
        )

    per_class = (
        long.groupby(["class", "class_name", "metric"], sort=False)["value"].apply(stats).unstack().reset_index()
    )
    fg = (
        per_class.groupby("metric", sort=False)["mean"]
        .apply(lambda s: float(s.dropna().mean()) if s.notna().any() else math.nan)
        .reset_index()
    )
    fg["class"], fg["class_name"], fg["std"], fg["n"], fg["n_nan"] = None, "mean", math.nan, math.nan, math.nan
    out = pd.concat([per_class, fg[per_class.columns]], ignore_index=True)
    out["n"] = out["n"].astype(float)
    out["n_nan"] = out["n_nan"].astype(float)
    return out


def load_run_summaries(
    results_dir: str | Path | Iterable[str | Path] | None = None,
    *,
    status: str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """One row per run folder (any status unless ``status`` is given): settings, status, cost and scores.

    Columns: the run fields of :func:`load_runs`, ``status, git_dirty, path, n_cases, train_s, test_eval_s,
    params_train, params_inference`` (trainable parameters vs those used at test time), ``finished`` (time), and
    the test split's foreground mean of every metric (``dice``, ``hd95_vox``, ...; NaN for unfinished runs).
    """
    runs = _filter(find_runs(results_dir, status=status), filters)
    rows = []
    for rec in runs:
        row = dict(rec.fields)
        timings = rec.manifest.get("timings") or {}
        params = rec.manifest.get("parameters") or {}
        row.update(
            train_s=timings.get("train_s"),
            test_eval_s=timings.get("test_eval_s"),
            params_train=params.get("train"),
            params_inference=params.get("inference"),
            created=rec.manifest.get("created"),
            finished_at=rec.manifest.get("finished"),
            has_checkpoint=(rec.path / "checkpoints" / "last.pt").exists(),
        )
        if rec.finished:
            summary = rec.summary()
            row["n_cases"] = summary.get("n_cases")
            row.update({m: v for m, v in (summary.get("foreground_mean") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def load_metrics_log(run_dir: str | Path, kind: str | None = None) -> pd.DataFrame:
    """A run's ``metrics.jsonl`` as a DataFrame (``kind``: ``"train"``, ``"val"`` or ``"epoch"`` records only).

    Train records hold the losses per logged step; val records ``val_dice_fg`` per validation; epoch records what
    a method logs at epoch ends (CoraNet: pseudo-label quality ``pl/<region>/<ppv|tpr|csi>_<class>``).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise RunDirError(f"{run_dir} has no metrics.jsonl")
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if kind is None or rec.get("type") == kind:
            records.append(rec)
    return pd.DataFrame(records)


def export_records(
    runs: Iterable[RunRecord | str | Path],
    dest: str | Path = RECORDS_DIR,
    *,
    root: str | Path | None = None,
) -> list[Path]:
    """Copy the lightweight files (:data:`RECORD_FILES` and ``plugins/``) of finished runs under ``dest``.

    The record keeps the run folder's layout ``<dataset>/<method>/<labelled>/seed<k>/<run id>/`` so that
    :func:`find_runs` reads it like a run. Checkpoints and data are never copied. Existing records are left as
    they are (a finished run does not change). Returns the record folders written.
    """
    dest = Path(dest)
    written = []
    for item in runs:
        rec = item if isinstance(item, RunRecord) else _read_run(Path(item), Path(item).parent)
        if rec is None or not rec.finished:
            continue
        rel = _layout_path(rec, root)
        target = dest / rel
        if (target / "eval" / "test" / "summary.json").exists():
            continue
        if rec.path.resolve() == target.resolve():
            continue
        for name in RECORD_FILES:
            src = rec.path / name
            if src.exists():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / name)
        plugins = rec.path / "plugins"
        if plugins.is_dir():
            shutil.copytree(plugins, target / "plugins", dirs_exist_ok=True)
        written.append(target)
    return written


def _layout_path(rec: RunRecord, root: str | Path | None) -> Path:
    base = Path(root) if root is not None else rec.source
    try:
        rel = rec.path.resolve().relative_to(base.resolve())
        if len(rel.parts) >= 2:
            return rel
    except ValueError:
        pass
    # fall back to the standard layout from the config
    labeled = rec.get("dataset.labeled")
    tag = "all" if rec.get("method") == "fully-supervised" else _lab_tag(labeled)
    return Path(str(rec.get("dataset.name")), str(rec.get("method")), tag, f"seed{rec.get('seed')}", rec.run_id)


def _lab_tag(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"lab{value}"
    return f"lab{int(v)}" if v > 1 else f"lab{v:g}"
