"""Issue #18, aggregation side: tables and the leaderboard read only complete runs and say how many they skipped;
the leaderboard counts a seed once; unknown option values exit 2 with suggestions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_tables import synthetic  # noqa: F401 - fixture: runs of a synthetic table spec

from ssl_bench.reporting.leaderboard import leaderboard
from ssl_bench.reporting.results import find_runs, load_runs

CORRUPTIONS = {
    "cut-csv": lambda run: _cut(run / "eval/test/per_case.csv", 0.6),
    "cut-csv-midline": lambda run: _cut(run / "eval/test/per_case.csv", 0.97),
    "empty-csv": lambda run: (run / "eval/test/per_case.csv").write_text(""),
    "bad-summary": lambda run: (run / "eval/test/summary.json").write_text('{"n_cases": 6, "classes'),
    "bad-manifest": lambda run: (run / "manifest.json").write_text('{"status": "fini'),
    "bad-config": lambda run: (run / "config.yaml").write_text("method: [unet\n"),
}


def _cut(path: Path, fraction: float) -> None:
    text = path.read_text()
    path.write_text(text[: int(len(text) * fraction)])


def _broken_copies(root: Path) -> list[Path]:
    """Newer copies of unet seed 1, each broken in one way: as the newest of its seed each would replace it."""
    (src,) = [p for p in root.rglob("*-u1") if p.is_dir()]
    made = []
    for i, (name, corrupt) in enumerate(sorted(CORRUPTIONS.items())):
        dst = src.with_name(f"20290101-00000{i}-{name}")
        shutil.copytree(src, dst)
        corrupt(dst)
        made.append(dst)
    return made


def test_incomplete_runs_are_skipped_counted_and_change_no_cell(synthetic, cli, capsys, tmp_path):  # noqa: F811
    from ssl_bench.reporting.tables import build_table

    spec, root = synthetic
    before = build_table(spec, root, preset="smoke")
    lb_before = leaderboard(root)
    broken = _broken_copies(root)
    assert {r.run_id for r in find_runs(root, status="finished")}.isdisjoint({p.name for p in broken})
    after = build_table(spec, root, preset="smoke")
    for key in ("RV", "Myo", "LV", "mean", "hd"):
        assert after.cell("base", key).mean == before.cell("base", key).mean
        assert after.cell("base", key).n == before.cell("base", key).n
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(leaderboard(root), lb_before)
    assert load_runs(root)["run_id"].nunique() == len(find_runs(root, status="finished"))
    spec_file = tmp_path / "T.yaml"
    spec_file.write_text(_spec_text())
    assert cli("table", spec_file, "--results", root, "--preset", "smoke", "--no-write") == 0
    err = capsys.readouterr().err
    assert f"{len(CORRUPTIONS)} run(s) skipped" in err and "see --verbose" in err
    assert cli("leaderboard", "--results", root, "--verbose") == 0
    err = capsys.readouterr().err
    assert f"{len(CORRUPTIONS)} run(s) skipped" in err
    for name in CORRUPTIONS:
        assert name in err


def _spec_text() -> str:
    from test_tables import SPEC

    return SPEC


def test_leaderboard_counts_each_seed_once_newest_finished_wins(synthetic):  # noqa: F811
    _, root = synthetic
    (src,) = [p for p in root.rglob("*-u1") if p.is_dir()]
    newer = src.with_name("20200101-000000-reran")  # an older folder name, but it finished last
    shutil.copytree(src, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "finished": "2030-01-01T00:00:00+00:00"}))
    text = (newer / "eval/test/per_case.csv").read_text().splitlines()
    header = text[0].split(",")
    col = header.index("dice")
    rows = [r.split(",") for r in text[1:]]
    for r in rows:
        r[col] = "0.1"
    (newer / "eval/test/per_case.csv").write_text("\n".join([text[0], *(",".join(r) for r in rows)]) + "\n")
    unet = leaderboard(root).set_index("method").loc["unet"]
    assert unet["n_runs"] == 3 and unet["duplicates"] == 2 and unet["seeds"] == "0 1 2"
    assert unet["mean"] == pytest.approx(100 * (0.7 + 0.1 + 2.3 / 3) / 3)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["leaderboard", "--metric", "dicee"], "dice"),
        (["leaderboard", "--preset", "smok"], "smoke"),
        (["leaderboard", "--dataset", "cardiac-phantm"], "cardiac-phantom"),
        (["leaderboard", "--results", "/nonexistent/runs"], "/nonexistent/runs"),
        (["table", "IX", "--preset", "smok"], "smoke"),
        (["table", "IX", "--results", "/nonexistent/runs"], "/nonexistent/runs"),
        (["table", "IX", "--dataset", "acdc=cardiac-phantm"], "cardiac-phantom"),
    ],
)
def test_unknown_names_exit_2_with_suggestions(cli, capsys, tmp_path, args, needle):
    code = cli(*args, "--no-write") if args[0] == "table" else cli(*args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert needle in err
