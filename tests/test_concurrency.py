"""One results tree, many writers (array tasks, DDP ranks, local workers): run folders are claimed atomically
(the same setting started in the same second gets distinct folders), and readers never see a half-written file."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from ssl_bench.core.io import atomic_write_json
from ssl_bench.training.rundir import create_run_folder  # imported before the workers fork


def _claim_and_mark(args: tuple[str, int]) -> str:
    planned, writer = args
    run_dir = create_run_folder(Path(planned), lambda folder: (folder / f"writer-{writer}").write_text(str(writer)))
    return str(run_dir)


def test_concurrent_runs_of_one_setting_get_distinct_folders(tmp_path):
    planned = tmp_path / "runs" / "cardiac-phantom" / "unet" / "lab0.2" / "seed0" / "20260101-000000-abcd1234"
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(4) as pool:
        claimed = pool.map(_claim_and_mark, [(str(planned), i) for i in range(8)])
    assert len(set(claimed)) == 8  # nobody shares (or clobbers) a folder
    for folder in map(Path, claimed):
        assert len(list(folder.iterdir())) == 1
    assert str(planned) in claimed and str(planned) + "-8" in claimed


def _write_many(args: tuple[str, int]) -> None:
    path, writer = args
    for i in range(15):
        atomic_write_json(Path(path), {"writer": writer, "i": i, "payload": [writer] * 5000})


def test_readers_never_see_a_partial_file_while_writers_race(tmp_path):
    path = tmp_path / "manifest.json"
    _write_many((str(path), -1))
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(3) as pool:
        pending = pool.map_async(_write_many, [(str(path), w) for w in range(3)])
        reads = 0
        while not pending.ready() or reads < 20:
            data = json.loads(path.read_text())  # raises on a torn file
            assert len(data["payload"]) == 5000 and set(data["payload"]) == {data["writer"]}
            reads += 1
        pending.get()
    assert not [p for p in tmp_path.iterdir() if p.name != "manifest.json"]  # no temp files left behind
