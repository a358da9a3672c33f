"""Kill-and-resume and concurrent identical runs, through the CLI (issue #18).

1. One uninterrupted smoke run is the reference (its wall time T is measured).
2. KILLS runs are each killed with SIGKILL at one random moment of their own progress (wall-clock moments
   drift with the machine's load): three a few ms after their run folder appears (the start-up window, where a
   folder used to be left with config.yaml only), one at a random time in the first 3 s, the others a random
   0-300 ms after a random logged training step, or after the test evaluation began. Each killed run is resumed
   (``ssl-bench resume``) -- or, if it was killed before its folder existed, started again -- and compared with
   the reference: ``eval/test/per_case.csv`` identical, ``metrics.jsonl`` identical except wall-clock
   times, no lock, staging folder or ``*.tmp`` file left.
3. CONCURRENT identical runs are started at once into one results folder: all must finish, each in its own
   folder, each equal to the reference (nothing lost, no log written twice).
4. Two ``resume`` processes of one killed run are started at once: exactly one resumes, the other refuses with
   the lock holder's PID, and the result equals the reference.

    python benchmarks/kill_resume.py [--kills 10] [--concurrent 3] [--seed 0]

Light: smoke preset, ``--threads 1``, the built-in phantom. Prints one line per trial and the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ["run", "--method", "unet", "--dataset", "cardiac-phantom", "--preset", "smoke", "--threads", "1"]


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "ssl_bench", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_folders(out: Path) -> list[Path]:
    """Visible run folders (<dataset>/<method>/<lab>/seed<k>/<run>) under ``out``."""
    return sorted(p for p in out.glob("*/*/*/*/*") if p.is_dir() and not p.name.startswith("."))


def leftovers(out: Path) -> list[str]:
    """Files a clean run leaves none of: locks, temp files of atomic writes, staging folders."""
    bad = [p for p in out.rglob("*") if p.name == ".lock" or p.name.endswith((".tmp", ".staging"))]
    return [str(p.relative_to(out)) for p in bad]


def fingerprint(run: Path) -> tuple[str, list[dict]]:
    """(per_case.csv text, metrics.jsonl records without wall-clock times) of a finished run."""
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return (run / "eval" / "test" / "per_case.csv").read_text(), [
        {k: v for k, v in rec.items() if k != "time"} for rec in log
    ]


def status(run: Path) -> str:
    try:
        return json.loads((run / "manifest.json").read_text()).get("status", "?")
    except (OSError, ValueError):
        return "unreadable"


def logged_steps(out: Path) -> int:
    folders = run_folders(out)
    try:
        lines = (folders[0] / "metrics.jsonl").read_text().splitlines()
    except (IndexError, OSError):
        return 0
    return sum(
        line.startswith("{") and line.endswith("}") and json.loads(line).get("type") == "train" for line in lines
    )


def trigger(kind: str, value: float) -> tuple[str, callable]:
    """(label, condition(out, elapsed s)) of one kill moment."""
    if kind == "folder":
        return f"folder + {value * 1000:.0f} ms", lambda out, t: bool(run_folders(out))
    if kind == "time":
        return f"t = {value:.2f} s", lambda out, t: t >= value
    if kind == "step":
        return f"step {int(value)}", lambda out, t: logged_steps(out) >= value
    return "test eval", lambda out, t: any((f / "eval").exists() for f in run_folders(out))


def kill_at(out: Path, condition, delay_s: float = 0.0) -> tuple[str, float]:
    """Start a run into ``out``; SIGKILL it ``delay_s`` after ``condition(out, elapsed)`` holds. Returns (what was
    killed, elapsed s)."""
    t0 = time.time()
    proc = subprocess.Popen(cli(*RUN, "--out", out, "--no-progress"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    while proc.poll() is None:
        if condition(out, time.time() - t0):
            time.sleep(delay_s)
            break
        time.sleep(0.002)
    if proc.poll() is not None:
        return "finished before the kill", time.time() - t0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folders = run_folders(out)
    what = f"folder {status(folders[0])}" if folders else "before the folder existed"
    return what, time.time() - t0


def complete(out: Path) -> tuple[int, str]:
    """Resume the killed run in ``out`` (or start it again if it has no folder); exit code and how."""
    folders = run_folders(out)
    if not folders:
        return subprocess.run(
            cli(*RUN, "--out", out, "--no-progress"), env=env(), capture_output=True
        ).returncode, "rerun"
    done = subprocess.run(cli("resume", folders[0], "--threads", "1", "--no-progress"), env=env(), capture_output=True)
    if done.returncode:
        print(done.stderr.decode()[-400:], file=sys.stderr)
    return done.returncode, "resume"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--concurrent", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="ssl-bench-kill-") as tmp:
        tmp_path = Path(tmp)
        os.environ.setdefault("SSL_BENCH_CACHE", str(tmp_path / "cache"))
        subprocess.run(cli(*RUN, "--out", tmp_path / "warm", "--no-progress"), env=env(), capture_output=True)
        t0 = time.time()
        ref = subprocess.run(cli(*RUN, "--out", tmp_path / "ref", "--no-progress"), env=env(), capture_output=True)
        total = time.time() - t0
        if ref.returncode:
            print(ref.stderr.decode(), file=sys.stderr)
            return 1
        reference = fingerprint(run_folders(tmp_path / "ref")[0])
        print(f"reference run: {total:.1f} s wall (process start to exit)")
        steps = sum(rec.get("type") == "train" for rec in reference[1])
        plan = [("folder", rng.uniform(0.0, 0.05)) for _ in range(3)] + [("time", rng.uniform(0.2, 3.0))]
        plan += [("eval", rng.uniform(0.0, 0.3))]
        plan += [("step", rng.randint(1, steps)) for _ in range(max(0, args.kills - len(plan)))]
        ok = killed = 0
        for i, (kind, value) in enumerate(plan[: args.kills]):
            out = tmp_path / f"kill{i}"
            label, condition = trigger(kind, value)
            delay = value if kind in ("folder", "eval") else rng.uniform(0.0, 0.3) if kind == "step" else 0.0
            what, at = kill_at(out, condition, delay)
            killed += what != "finished before the kill"
            code, how = complete(out)
            folders = run_folders(out)
            same = code == 0 and len(folders) == 1 and fingerprint(folders[0]) == reference
            clean = not leftovers(out)
            ok += same and clean
            print(
                f"kill {i + 1:2d} at {label:>16} ({at:5.2f} s, {what}): {how} exit {code}, "
                f"identical={same}, clean={clean}{'' if clean else ' ' + str(leftovers(out))}"
            )
        print(f"kill-resume: {ok}/{args.kills} identical to the uninterrupted run ({killed} killed while running)")

        out = tmp_path / "concurrent"
        procs = [
            subprocess.Popen(
                cli(*RUN, "--out", out, "--no-progress"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )  # fmt: skip
            for _ in range(args.concurrent)
        ]
        codes = [p.wait() for p in procs]
        folders = run_folders(out)
        equal = sum(fingerprint(f) == reference for f in folders if status(f) == "finished")
        print(
            f"concurrent identical runs: {args.concurrent} started, exit codes {codes}, {len(folders)} folders, "
            f"{equal} finished and identical to the reference, leftovers {leftovers(out) or 'none'}; folders: "
            f"{', '.join(f.name for f in folders)}"
        )
        conc_ok = codes == [0] * args.concurrent and len(folders) == args.concurrent == equal

        out = tmp_path / "double-resume"
        kill_at(out, trigger("step", 1)[1], 0.0)
        (folder,) = run_folders(out)
        resumes = [
            subprocess.Popen(
                cli("resume", folder, "--threads", "1", "--no-progress"),
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for _ in range(2)
        ]
        outcomes = [(p.wait(), p.stderr.read().decode().strip().splitlines()[-1:]) for p in resumes]
        refused = [msg for code, msg in outcomes if code == 2 and msg and "in use by PID" in msg[0]]
        same = status(folder) == "finished" and fingerprint(folder) == reference
        print(
            f"two resumes at once: exit codes {[c for c, _ in outcomes]}, refusals naming the lock holder: "
            f"{len(refused)}, result identical={same}" + (f" ({refused[0][0][:110]}...)" if refused else "")
        )
        double_ok = sorted(c for c, _ in outcomes) in ([0, 2], [0, 0]) and same
        return 0 if ok == args.kills and conc_ok and double_ok else 1


if __name__ == "__main__":
    sys.exit(main())
