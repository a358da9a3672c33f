"""Run logs beside ``metrics.jsonl``: plain log lines, and the optional TensorBoard, CSV and W&B loggers.

Every record the trainer appends to ``metrics.jsonl`` (``type`` train / val / epoch, at a ``step``) also goes to:

* ``train.log`` in the run folder, always: one plain line per record (step/total, losses, val Dice, it/s, ETA);
  the same lines go to stderr when stdout is not a terminal (``nohup``, SLURM) or the progress bar is hidden;
* the loggers of ``trainer.loggers`` (``--logger tensorboard,csv``):

  - ``tensorboard``: event files in ``<run>/tensorboard/`` (``torch.utils.tensorboard``; ``pip install
    'ssl-bench[tensorboard]'``), one scalar per value, tagged ``<type>/<key>`` (``train/loss``, ``val/dice_fg``);
  - ``csv``: ``<run>/scalars.csv``, the same scalars one per row: ``wall_time, step, epoch, stage, tag, value``;
  - ``wandb``: Weights & Biases (``pip install wandb``; ``WANDB_MODE=offline`` works without an account), the same
    tags, one W&B run per run folder (``WANDB_PROJECT``, default ``ssl-bench``).

Resume: the trainer first cuts ``metrics.jsonl`` back to its checkpoint; :meth:`RunLogs.open` then keeps exactly the
lines/rows of the records that survived (keyed by ``(type, step)``) and tells TensorBoard to purge every event from
the resume step on (``purge_step``), re-writing the kept records of that step, so nothing is duplicated. W&B cannot
rewind: after a kill it keeps the points logged past the checkpoint, and steps it already has are not re-logged.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ssl_bench.core.errors import ConfigError
from ssl_bench.core.io import atomic_write_text

#: trainer.loggers values, and the package each one needs
LOGGERS: dict[str, str] = {"tensorboard": "tensorboard", "csv": "", "wandb": "wandb"}
TEXT_LOG = "train.log"
CSV_LOG = "scalars.csv"
TENSORBOARD_DIR = "tensorboard"
CSV_COLUMNS = ("wall_time", "step", "epoch", "stage", "tag", "value")
#: record fields that are positions, not scalars
_POSITION_KEYS = frozenset({"type", "step", "epoch", "stage", "time"})
_LINE = re.compile(r"^\[[^\]]*\] (train|val|epoch) step (\d+)/")


def check_loggers(names: Iterable[str]) -> None:
    """Raise :class:`ConfigError` for an unknown logger name or a logger whose package is not installed."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"trainer.loggers: unknown logger {name!r}; use any of {', '.join(LOGGERS)}")
        package = LOGGERS[name]
        if package and importlib.util.find_spec(package) is None:
            extra = "pip install 'ssl-bench[tensorboard]'" if name == "tensorboard" else f"pip install {package}"
            raise ConfigError(f"the {name} logger needs the {package!r} package, which is not installed: {extra}")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A log record's numeric values as ``{tag: value}``, tag ``<type>/<key>`` (``val/val_dice_fg`` ->
    ``val/dice_fg``); positions (step, epoch, stage, time) and non-numeric values are left out."""
    kind = str(record.get("type", "log"))
    out = {}
    for key, value in record.items():
        if key in _POSITION_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = key[len(kind) + 1 :] if key.startswith(f"{kind}_") else key
        out[f"{kind}/{name}"] = float(value)
    return out


def record_key(record: dict[str, Any]) -> tuple[str, int]:
    """``(type, step)``: unique per record of a run (one train record per logged step, one epoch end per step)."""
    return str(record.get("type")), int(record.get("step", 0))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``metrics.jsonl`` (a line cut by a kill is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _complete_lines(path: Path) -> list[str]:
    """Lines of ``path`` that end with a newline (the last one may have been cut by a kill)."""
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines(keepends=True)
    return [line for line in lines if line.endswith("\n")]


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``; ``"?"`` for an unknown duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class TextLog:
    """``train.log``: one plain line per record, optionally echoed to the console."""

    def __init__(
        self,
        path: Path,
        total_steps: int,
        start_step: int,
        kept: set[tuple[str, int]],
        best: float,
        echo: Callable[[str], None] | None,
    ) -> None:
        if path.exists():  # keep the lines of the surviving records, and the start/resume lines
            lines = [ln for ln in _complete_lines(path) if (m := _LINE.match(ln)) is None or _line_key(m) in kept]
            atomic_write_text(path, "".join(lines))
        self.total, self.start_step, self.best, self.echo = total_steps, start_step, best, echo
        self.t0 = time.time()
        self.fh = path.open("a", buffering=1)
        verb = "resume" if start_step else "start"
        self._emit(f"{verb} at step {start_step}/{total_steps}")

    def _emit(self, text: str) -> None:
        line = f"[{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')}] {text}"
        self.fh.write(line + "\n")
        if self.echo is not None:
            self.echo(line)

    def format(self, record: dict[str, Any]) -> str:
        """``train step 120/400 (30%) stage=main loss=0.4321 lr=0.001 | 3.2 it/s, ETA 0:01:27``."""
        kind, step = record_key(record)
        head = f"{kind} step {step}/{self.total} ({100 * step / self.total:.0f}%) stage={record.get('stage')}"
        values = scalars(record)
        if kind == "val":
            dice = values.pop("val/dice_fg", math.nan)
            if not math.isnan(dice) and dice > self.best:
                self.best = dice
            best = _number(self.best) if math.isfinite(self.best) else "none yet"
            body = f"Dice (fg) {_number(dice)} (best {best})"
            body += "".join(f" {tag.split('/', 1)[1]}={_number(v)}" for tag, v in values.items())
        else:
            if kind == "epoch":
                head += f" epoch={record.get('epoch')}"
            body = " ".join(f"{tag.split('/', 1)[1]}={_number(v)}" for tag, v in values.items())
        elapsed, done = time.time() - self.t0, step - self.start_step
        rate = done / elapsed if done > 0 and elapsed > 0 else math.nan
        eta = (self.total - step) / rate if rate > 0 else math.nan
        speed = "? it/s" if math.isnan(rate) else f"{rate:.3g} it/s"
        return f"{head} {body} | {speed}, ETA {format_duration(eta)}"

    def write(self, record: dict[str, Any]) -> None:
        self._emit(self.format(record))

    def close(self) -> None:
        self.fh.close()


def _line_key(match: re.Match[str]) -> tuple[str, int]:
    return match.group(1), int(match.group(2))


class CsvLog:
    """``scalars.csv``: one row per scalar (``wall_time, step, epoch, stage, tag, value``)."""

    def __init__(self, path: Path, kept: set[tuple[str, int]]) -> None:
        header = ",".join(CSV_COLUMNS) + "\n"
        rows = _complete_lines(path)[1:] if path.exists() else []
        keep = [r for r in rows if _csv_key(r) in kept]
        atomic_write_text(path, header + "".join(keep))
        self.fh = path.open("a", buffering=1, newline="")

    def write(self, record: dict[str, Any]) -> None:
        kind, step = record_key(record)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        now = round(time.time(), 3)
        for tag, value in scalars(record).items():
            writer.writerow([now, step, record.get("epoch", ""), record.get("stage", ""), tag, repr(value)])
        self.fh.write(text.getvalue())

    def close(self) -> None:
        self.fh.close()


def _csv_key(row: str) -> tuple[str, int] | None:
    try:
        fields = next(csv.reader([row]))
        return fields[4].split("/", 1)[0], int(fields[1])
    except (StopIteration, IndexError, ValueError):
        return None


class TensorBoardLog:
    """Event files in ``<run>/tensorboard``; a resume purges the events from its step on (``purge_step``)."""

    def __init__(self, folder: Path, start_step: int, kept_at_start: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resumed = folder.is_dir() and any(folder.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=start_step if resumed else None)
        for record in kept_at_start if resumed else []:
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        step = record_key(record)[1]
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a killed run keeps everything up to its checkpoint

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    """One W&B run per run folder (its id derived from the folder path), resumed with ``resume="allow"``."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ssl-bench"),
            id=run_id,
            name=run_dir.name,
            dir=str(run_dir),
            config=config,
            resume="allow",
        )

    def write(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=record_key(record)[1])

    def close(self) -> None:
        self.run.finish()


class RunLogs:
    """Fan-out of the trainer's log records to ``train.log`` and the configured loggers.

    Open it when training (re)starts: ``metrics.jsonl`` must already hold only the records that precede
    ``start_step`` (the trainer's resume truncation).
    """

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    @classmethod
    def open(
        cls,
        run_dir: Path,
        loggers: Iterable[str],
        start_step: int,
        total_steps: int,
        *,
        config: dict[str, Any] | None = None,
        bar: Any = None,
    ) -> RunLogs:
        """``bar``: the trainer's tqdm bar; lines are echoed to stderr when it is hidden or stdout is not a TTY."""
        names = list(dict.fromkeys(loggers))
        check_loggers(names)
        records = [r for r in read_records(run_dir / "metrics.jsonl") if record_key(r)[1] <= start_step]
        kept = {record_key(r) for r in records}
        vals = [float(r.get("val_dice_fg", math.nan)) for r in records if r.get("type") == "val"]
        best = max((v for v in vals if not math.isnan(v)), default=-math.inf)
        echo = None
        if bar is None or getattr(bar, "disable", True) or not sys.stdout.isatty():
            from tqdm.auto import tqdm

            echo = lambda line: tqdm.write(line, file=sys.stderr)  # noqa: E731 - keeps a visible bar intact
        sinks: list[Sink] = [TextLog(run_dir / TEXT_LOG, total_steps, start_step, kept, best, echo)]
        if "csv" in names:
            sinks.append(CsvLog(run_dir / CSV_LOG, kept))
        if "tensorboard" in names:
            at_start = [r for r in records if record_key(r)[1] == start_step]
            sinks.append(TensorBoardLog(run_dir / TENSORBOARD_DIR, start_step, at_start))
        if "wandb" in names:
            sinks.append(WandbLog(run_dir, config or {}))
        return cls(sinks)

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
