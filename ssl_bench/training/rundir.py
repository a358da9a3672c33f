"""Run-folder safety under kills and concurrency.

* A run folder appears complete or not at all: its first files (``config.yaml``, ``manifest.json``, plugin copies,
  the lock) are written into a hidden staging sibling that is then renamed into place
  (:func:`create_run_folder`). So a folder that exists can always be resumed, and two identical runs started in the
  same second get distinct folders (``<name>``, ``<name>-2``, ...).
* One writer at a time: ``<run>/.lock`` holds the PID, host and process start time of the process training or
  evaluating the run (:func:`acquire_lock`). ``resume``/``eval`` of a run whose lock holder is alive refuse and name
  it; a lock left by a dead process (a kill -9, a crash) is taken over.
* Leftovers of a kill: orphaned ``*.tmp`` files of interrupted atomic writes are removed on resume
  (:func:`remove_orphan_temp_files`).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ssl_bench import __version__
from ssl_bench.core.errors import ConfigError, RunDirError
from ssl_bench.core.io import current_umask

LOCK_NAME = ".lock"


def create_run_folder(run_dir: Path, populate: Callable[[Path], None]) -> Path:
    """Create ``run_dir`` with the files ``populate(folder)`` writes, atomically.

    ``populate`` writes into a hidden staging folder next to ``run_dir``; the staging folder is then renamed to
    ``run_dir`` or, if that name was taken in the meantime (an identical run started in the same second), to
    ``run_dir-2``, ``run_dir-3``, ... Returns the folder's final path. On failure nothing is left behind.
    """
    base = run_dir.parent
    base.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(base)
    staging = base / f".{run_dir.name}.{os.getpid()}-{_host_tag()}-{secrets.token_hex(4)}.staging"
    staging.mkdir()
    try:
        populate(staging)
        k = 1
        while True:
            target = run_dir if k == 1 else run_dir.with_name(f"{run_dir.name}-{k}")
            if not target.exists():
                try:
                    os.rename(staging, target)  # fails on a non-empty target: another run took the name first
                    return target
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            k += 1
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_out_root(out: Path) -> None:
    """Fail now, with one line, if run folders cannot be written under ``out`` (a file, ``/dev/null``, a read-only
    or virtual file system): create its folders and a probe file there."""
    out = Path(out)
    probe = out / f".ssl-bench-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder: give a folder for the run folders")
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        if probe.read_bytes() != b"ok":
            raise OSError(errno.EIO, "written data did not read back", str(probe))
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: run folders cannot be written there ({exc.strerror or exc})") from exc


def disk_full_message(exc: BaseException, run_dir: Path) -> str | None:
    """The one-line message for a write that failed because the disk (or quota) is full; None for other errors."""
    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = exc.filename or run_dir
    return (
        f"disk full while writing {where} ({exc.strerror}); the last checkpoint is intact: free some space, then "
        f"`ssl-bench resume {run_dir}` continues the run"
    )


def git_state() -> dict[str, Any]:
    src = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=src, capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"sha": None, "dirty": None}


def versions() -> dict[str, str]:
    import numpy
    import torch

    out = {
        "ssl_bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    for mod in ("segmentation_models_pytorch", "timm", "medpy", "scipy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional info
            pass
    return out


def _host_tag() -> str:
    """This machine's name, reduced to characters safe in a file name (staging folders are per host)."""
    return "".join(c if c.isalnum() else "_" for c in platform.node()) or "host"


def _remove_dead_staging(base: Path) -> None:
    """Delete staging folders in ``base`` left by processes of this host killed while creating their run folder
    (a PID says nothing about another node's processes on a shared results tree: those are left alone)."""
    for path in base.glob(".*.staging"):
        try:
            pid_s, host, _ = path.name.rsplit(".", 2)[-2].split("-", 2)
            pid = int(pid_s)
        except (ValueError, IndexError):
            continue
        if host == _host_tag() and pid != os.getpid() and not _alive({"pid": pid}):
            shutil.rmtree(path, ignore_errors=True)


# -- the lock -------------------------------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), to tell a reused PID apart; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote ``holder`` (on this host) is still running."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    started = holder.get("proc_start")
    return started is None or _process_start(pid) in (None, started)


def read_lock(run_dir: Path) -> dict[str, Any] | None:
    """The lock record of ``run_dir`` (``pid``, ``host``, ``since``, ``purpose``), None if unlocked."""
    try:
        data = json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class RunLock:
    """A held lock; :meth:`release` removes it (only if it is still ours)."""

    path: Path
    record: dict[str, Any]

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("token") == self.record["token"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def lock_record(purpose: str) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "proc_start": _process_start(pid),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "purpose": purpose,
        "token": secrets.token_hex(8),
    }


def write_lock(folder: Path, record: dict[str, Any]) -> RunLock:
    """Create ``folder/.lock`` holding ``record``; raises FileExistsError if a lock exists (no partial file is
    ever visible: the record is written to a temporary file and hard-linked into place)."""
    path = Path(folder) / LOCK_NAME
    tmp = path.with_name(f"{LOCK_NAME}.{record['token']}.tmp")
    tmp.write_text(json.dumps(record))
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()
    return RunLock(path, record)


def acquire_lock(run_dir: Path, purpose: str) -> RunLock:
    """Lock ``run_dir`` for ``purpose`` (``"resume"``, ``"eval"``), taking over a lock whose process is dead.

    Raises:
        RunDirError: another live process (or one on another host, which cannot be checked) holds the lock.
    """
    run_dir = Path(run_dir)
    record = lock_record(purpose)
    for _ in range(3):
        try:
            return write_lock(run_dir, record)
        except FileExistsError:
            holder = read_lock(run_dir)
            if holder is None:
                continue  # released meanwhile
            same_host = holder.get("host") == record["host"]
            if holder and (not same_host or _alive(holder)):
                where = f"PID {holder.get('pid')} on host {holder.get('host')}"
                since = f" since {holder['since']}" if holder.get("since") else ""
                hint = (
                    f"wait for it to end or stop it (kill {holder.get('pid')}), then retry"
                    if same_host
                    else f"if that process is gone, delete {run_dir / LOCK_NAME} and retry"
                )
                raise RunDirError(
                    f"{run_dir} is in use by {where} ({holder.get('purpose', 'training')}{since}): {hint}"
                ) from None
            stale = run_dir / f"{LOCK_NAME}.stale-{record['token']}"
            try:  # exactly one of several contenders wins this rename
                os.rename(run_dir / LOCK_NAME, stale)
                stale.unlink()
            except FileNotFoundError:
                pass
    raise RunDirError(f"{run_dir}: could not take the run lock ({run_dir / LOCK_NAME} keeps changing); retry")


# -- leftovers of a kill --------------------------------------------------------------------------------------


def remove_orphan_temp_files(run_dir: Path) -> list[Path]:
    """Delete the ``*.tmp`` files that interrupted atomic writes left in ``run_dir`` (call with the lock held)."""
    removed = []
    for path in Path(run_dir).rglob("*.tmp"):
        if path.is_file() and path.name.startswith("."):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
