"""Paper tables (ssl_bench.reporting.tables): specs, aggregation against hand-computed values, rendering, provenance,
missing runs, and the ``table`` / ``leaderboard`` commands."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import wilcoxon
from test_results import FAST, _run_dirs, smoke_tree  # noqa: F401 - session fixture shared with test_results

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO.parent / "shared" / "paper" / "coranet_tmi.txt"
TABLE_IDS = ["II", "III", "IV", "V", "VI", "VII", "VIII", "IX"]


# -- specs ----------------------------------------------------------------------------------------------------------


def test_all_tables_registered_with_titles(cli, capsys):
    from ssl_bench.core.registry import TABLES

    assert set(TABLES.names()) == {t.lower() for t in TABLE_IDS}
    for tid in TABLE_IDS:
        entry = TABLES.entry(tid)
        assert entry.summary.startswith(f"Table {tid}: ")
    assert cli("list", "tables") == 0
    out = capsys.readouterr().out
    assert all(f"Table {tid}: " in out for tid in TABLE_IDS)


def _paper_block(text: str, table_id: str) -> list[list[str]]:
    """Two-decimal numbers of each line of the paper's table ``table_id`` (lines without numbers dropped)."""
    start = text.index(f"\nTABLE {table_id}\n")
    lines = text[start:].splitlines()[2:]
    rows, started = [], False
    for line in lines:
        nums = re.findall(r"\d+\.\d\d", line)
        if nums:
            rows.append(nums)
            started = True
        elif started and not line.strip():
            break
        elif started and not any(h in line for h in ("Backbone", "\t")):
            break
    return rows


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text (shared/paper/coranet_tmi.txt) is not beside the repo")
@pytest.mark.parametrize("table_id", TABLE_IDS)
def test_paper_values_are_transcribed_exactly(table_id):
    """Every in-paper row's numbers, in column order, are exactly one line of the paper's table, and every numeric
    line of the paper's table is a row of the spec."""
    from ssl_bench.reporting.tables import get_spec

    spec = get_spec(table_id)
    paper_rows = _paper_block(PAPER.read_text(), table_id)
    mine = []
    for row in spec.rows:
        if not row.in_paper:
            continue
        nums = []
        for col in spec.columns:
            value, std = row.paper[col.key]
            nums += [f"{v:.2f}" for v in (value, std) if v is not None]
        mine.append(nums)
    assert sorted(mine) == sorted(paper_rows)


def test_spec_file_errors_are_clear(tmp_path):
    from ssl_bench.core.errors import ConfigError
    from ssl_bench.reporting.tables import load_spec

    good = yaml.safe_load((REPO / "benchmarks" / "tables" / "II.yaml").read_text())
    cases = {
        "colour": ({**good, "colour": "red"}, "unknown key"),
        "paper": ({**good, "rows": [{**good["rows"][0], "paper": {"dsc": 1.0}}]}, "paper values needed"),
        "baseline": ({**good, "baseline": "nope"}, "baseline 'nope' is not a row id"),
        "col": (
            {**good, "rows": [{**good["rows"][0], "paper": {**good["rows"][0]["paper"], "x": 1}}]},
            "unknown column",
        ),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=message):
            load_spec(path)


# -- hand-computed aggregation on synthetic run folders ------------------------------------------------------------

SPEC = """
id: T
title: "synthetic"
dataset: cardiac-phantom
labeled: 0.2
seeds: [0, 1, 2]
baseline: base
columns:
  - {key: RV, label: RV, metric: dice, class: 1}
  - {key: Myo, label: Myo, metric: dice, class: 2}
  - {key: LV, label: LV, metric: dice, class: 3}
  - {key: mean, label: mean, metric: dice}
  - {key: hd, label: "HD (voxel)", metric: hd95_vox}
rows:
  - {id: base, label: "U-Net", method: unet, in_paper: false}
  - id: mt
    label: "MT"
    method: mean-teacher
    paper: {RV: [82.99, 0.49], Myo: 80.43, LV: 89.33, mean: 84.25, hd: null}
  - {id: cited, label: "Cited", method: null, paper: {RV: 1.0, Myo: 2.0, LV: 3.0, mean: 2.0, hd: 9.0}}
  - {id: future, label: "Future", method: not-a-method, paper: {RV: 1.0, Myo: 2.0, LV: 3.0, mean: 2.0, hd: 9.0}}
"""

NAN = float("nan")
# per seed: per class, the Dice of the 6 test cases (hand-picked so that the means are round numbers)
UNET = {
    0: {1: [0.6, 0.7, 0.8, 0.6, 0.7, 0.8], 2: [0.5, NAN, 0.5, 0.5, 0.5, 0.5], 3: [0.9] * 6},
    1: {1: [0.5, 0.6, 0.7, 0.5, 0.6, 0.7], 2: [0.4] * 6, 3: [0.9] * 6},
    2: {1: [0.8] * 6, 2: [0.6] * 6, 3: [0.9] * 6},
}
MT0 = {1: [0.9, 0.8, 0.9, 0.8, 0.9, 0.8], 2: [0.5, 0.5, 0.5, 0.5, 0.5, 0.4], 3: [0.9] * 6}
HD = {("unet", 0): 10.0, ("unet", 1): 12.0, ("unet", 2): 14.0, ("mean-teacher", 0): 8.0}
CASES = [f"case{i}" for i in range(6)]


def fake_run(
    root: Path,
    method: str,
    seed: int,
    dice: dict[int, list[float]],
    hd: float,
    name: str,
    status: str = "finished",
    overrides: dict | None = None,
) -> Path:
    """A run folder as the runner writes it (config from resolve_config; made-up scores)."""
    from ssl_bench.core.config import config_hash, to_dict
    from ssl_bench.evaluation.evaluate import summarize, write_eval
    from ssl_bench.training.runner import labelled_tag, resolve_config

    cfg = resolve_config(method, "cardiac-phantom", preset="smoke", seed=seed, overrides=overrides)
    run_dir = root / "cardiac-phantom" / method / labelled_tag(cfg) / f"seed{seed}" / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    manifest = {
        "status": status,
        "config_hash": config_hash(cfg),
        "git": {"sha": f"{seed:040d}", "dirty": False},
        "parameters": {"train": 1000, "inference": 900},
        "timings": {"train_s": 60.0 + seed, "test_eval_s": 1.0},
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    if status == "finished":
        rows = []
        for i, case in enumerate(CASES):
            for k in (1, 2, 3):
                d = dice[k][i]
                rows.append({"case": case, "class": k, "dice": d, "hd95_vox": NAN if math.isnan(d) else hd})
        write_eval(run_dir / "eval" / "test", rows, summarize(rows, ["bg", "RV", "Myo", "LV"], "mm"))
    return run_dir


@pytest.fixture
def synthetic(tmp_path):
    from ssl_bench.reporting.tables import load_spec

    spec_path = tmp_path / "T.yaml"
    spec_path.write_text(SPEC)
    root = tmp_path / "runs"
    for seed, dice in UNET.items():
        fake_run(root, "unet", seed, dice, HD[("unet", seed)], f"20260101-00000{seed}-u{seed}")
    fake_run(root, "mean-teacher", 0, MT0, HD[("mean-teacher", 0)], "20260101-000010-mt0")
    # an older duplicate of unet seed 0 with other numbers: the newest run of a seed is used
    fake_run(root, "unet", 0, {k: [0.0] * 6 for k in (1, 2, 3)}, 99.0, "20250101-000000-old")
    return load_spec(spec_path), root


def test_cell_mean_std_over_seeds_per_class(synthetic):
    from ssl_bench.reporting.tables import build_table

    spec, root = synthetic
    t = build_table(spec, root, preset="smoke")
    rv = t.cell("base", "RV")  # per seed 0.7, 0.6, 0.8 -> 70 ± 10
    assert rv.n == 3 and rv.mean == pytest.approx(70.0) and rv.std == pytest.approx(10.0)
    assert [r.run_id for r in rv.runs] == ["20260101-000000-u0", "20260101-000001-u1", "20260101-000002-u2"]
    assert rv.duplicates == 1
    myo = t.cell("base", "Myo")  # seed 0 skips the NaN case: 0.5, 0.4, 0.6 -> 50 ± 10
    assert myo.mean == pytest.approx(50.0) and myo.std == pytest.approx(10.0)
    mean = t.cell("base", "mean")  # per seed (0.7+0.5+0.9)/3, (0.6+0.4+0.9)/3, (0.8+0.6+0.9)/3
    assert mean.mean == pytest.approx(70.0) and mean.std == pytest.approx(100 * 0.2 / 3)
    hd = t.cell("base", "hd")
    assert hd.mean == pytest.approx(12.0) and hd.std == pytest.approx(2.0)
    mt = t.cell("mt", "RV")
    assert mt.n == 1 and mt.mean == pytest.approx(85.0) and math.isnan(mt.std)
    assert t.cell("mt", "mean").mean == pytest.approx(100 * (0.85 + 2.9 / 6 + 0.9) / 3)
    assert mt.paper == 82.99 and mt.paper_std == 0.49 and mt.delta == pytest.approx(85.0 - 82.99)
    # best: higher Dice, lower HD
    assert mt.best and not rv.best
    assert t.cell("mt", "hd").best and not hd.best
    # paper-only and not-yet-registered rows stay empty
    assert not t.cell("cited", "RV").measured and not t.cell("future", "RV").runnable
    assert "not registered" in t.cell("future", "RV").reason


def test_a_run_with_other_settings_fills_no_cell_of_the_plain_preset(synthetic, tmp_path):
    """The newest run of a seed is used only if its whole resolved config is the cell's: a longer run made with
    ``--set trainer.epochs=...`` (or one made before a preset changed) must not replace the preset's run."""
    from ssl_bench.reporting.tables import build_table, load_spec

    spec, root = synthetic
    longer = fake_run(
        root, "unet", 0, {k: [0.1] * 6 for k in (1, 2, 3)}, 1.0, "20270101-000000-long", overrides={"trainer.epochs": 7}
    )
    rv = build_table(spec, root, preset="smoke").cell("base", "RV")
    assert longer.name not in [r.run_id for r in rv.runs] and rv.mean == pytest.approx(70.0)
    # a spec asking for that setting (a `set` key) finds it, and only it
    other = tmp_path / "long.yaml"
    other.write_text(SPEC.replace("seeds: [0, 1, 2]", "seeds: [0, 1, 2]\nset: {trainer.epochs: 7}"))
    cell = build_table(load_spec(other), root, preset="smoke").cell("base", "RV")
    assert [r.run_id for r in cell.runs] == [longer.name] and cell.mean == pytest.approx(10.0)
    # a key an older ssl-bench did not write is not compared; a differing one is
    config = longer / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["trainer"]["epochs"] = 2
    del data["trainer"]["amp"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    assert build_table(spec, root, preset="smoke").cell("base", "RV").runs[0].run_id == longer.name


def test_a_run_without_params_loss_was_made_with_eq1s_ce():
    """CoraNet gained params.loss when the recipe presets moved it to CE + Dice: its older cpu-bench records (no
    such key) must not fill the new cells, while its older cpu-preset records (CE then and now) still do."""
    from ssl_bench.reporting.tables.cells import matches, variant_items

    old = {"method": "coranet", "preset": "cpu-bench", "dataset.name": "acdc"}
    recipe = {**old, "params.loss": "ce+dice-ssl4mis"}
    assert not matches(old, recipe) and matches({**old, "params.loss": "ce+dice-ssl4mis"}, recipe)
    assert matches(old, {**old, "params.loss": "ce"})
    assert not matches(recipe, {**recipe, "params.st_loss": "ce+dice-ssl4mis"})  # made before params.st_loss
    record = {**old, "dataset.labeled": 7.0, "params.estimator": "crm", "params.alpha": 5.0}
    assert variant_items(record)["params.loss"] == "ce"


def test_finished_runs_like_matches_setting_and_seed(synthetic):
    from ssl_bench.reporting.tables import finished_runs_like
    from ssl_bench.training.runner import resolve_config

    _, root = synthetic
    fake_run(root, "unet", 1, UNET[1], 1.0, "20270101-000000-long", overrides={"trainer.epochs": 7})
    plain = resolve_config("unet", "cardiac-phantom", preset="smoke", seed=1)
    assert [r.run_id for r in finished_runs_like(plain, root)] == ["20260101-000001-u1"]
    longer = resolve_config("unet", "cardiac-phantom", preset="smoke", seed=1, overrides={"trainer.epochs": 7})
    assert [r.run_id for r in finished_runs_like(longer, root)] == ["20270101-000000-long"]
    assert finished_runs_like(resolve_config("unet", "cardiac-phantom", preset="smoke", seed=5), root) == []


def test_wilcoxon_marker_against_baseline(synthetic):
    from ssl_bench.reporting.tables import build_table

    spec, root = synthetic
    t = build_table(spec, root, preset="smoke")
    # RV: per-case baseline averaged over seeds vs MT; all 6 differences positive -> exact p = 2 / 2**6
    base = np.mean([UNET[s][1] for s in (0, 1, 2)], axis=0)
    p = wilcoxon(MT0[1], base).pvalue
    assert p == pytest.approx(2 / 64)
    rv = t.cell("mt", "RV")
    assert rv.p_value == pytest.approx(p) and rv.significant
    # Myo: one non-zero difference -> p = 1, no marker; LV: all equal -> nothing to test
    assert t.cell("mt", "Myo").p_value == pytest.approx(1.0) and not t.cell("mt", "Myo").significant
    assert t.cell("mt", "LV").p_value is None and not t.cell("mt", "LV").significant
    assert t.cell("base", "RV").p_value is None  # the baseline itself


def test_render_formats(synthetic, tmp_path):
    from ssl_bench.reporting.tables import build_table, render, write_table

    spec, root = synthetic
    t = build_table(spec, root, preset="smoke")
    md = render(t, "md")
    line = next(x for x in md.splitlines() if x.startswith("| MT "))
    assert "**85.00** (n=1)†" in line and "82.99 (0.49), Δ +2.01" in line
    assert "| U-Net (not in paper) | 70.00 ± 10.00 (n=3) | n/a |" in md
    assert "| Cited (paper only) | — | 1.00 |" in md
    assert "Future (not runnable yet)" in md and "method 'not-a-method' is not registered yet" in md
    assert "Empty masks:" in md and "HD (voxel) = hd95_vox in voxel" in md and "Preset: smoke" in md
    tex = render(t, "tex")
    assert r"\textbf{85.00} (n=1)$^\dagger$" in tex and r"\toprule" in tex and "70.00 $\\pm$ 10.00 (n=3)" in tex
    rows = list(csv.DictReader(io.StringIO(render(t, "csv"))))
    assert len(rows) == 4 * 5
    mt_rv = next(r for r in rows if r["row"] == "mt" and r["column"] == "RV")
    assert float(mt_rv["mean"]) == pytest.approx(85.0) and mt_rv["significant"] == "True"
    assert float(mt_rv["p_value"]) == pytest.approx(2 / 64) and mt_rv["run_ids"] == "20260101-000010-mt0"
    html = render(t, "html")
    assert "<b>85.00</b> (n=1)<sup>†</sup>" in html
    written = write_table(t, tmp_path / "tables")
    assert sorted(p.name for p in written) == ["T-smoke.csv", "T-smoke.md", "T-smoke.provenance.json", "T-smoke.tex"]


def _write_val_curve(run_dir: Path, curve: dict[int, float]) -> None:
    lines = [{"type": "train", "step": 1, "loss": 1.0, "time": 0.1}]
    lines += [{"type": "val", "step": step, "val_dice_fg": dice} for step, dice in curve.items()]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_convergence_summarises_the_val_curves_of_the_runs_the_table_uses(synthetic, cli, capsys, tmp_path):
    """Hand-computed: value at 25/50/75/100 % of training (last validation at or before), best, last-quarter gain."""
    from ssl_bench.reporting.tables import build_table, render_convergence, row_convergence

    spec, root = synthetic
    runs = {p.name: p for p in root.rglob("20*") if (p / "manifest.json").exists()}
    _write_val_curve(runs["20260101-000000-u0"], {10: 0.5, 20: 0.6, 30: 0.7, 40: 0.72})
    _write_val_curve(runs["20260101-000001-u1"], {10: 0.4, 20: 0.5, 30: 0.6, 40: 0.61})
    _write_val_curve(runs["20260101-000002-u2"], {5: 0.1, 15: 0.3, 25: 0.5, 35: 0.6, 40: 0.58})  # off the quarters
    _write_val_curve(runs["20250101-000000-old"], {10: 0.0, 40: 0.0})  # an older duplicate: not in the table
    _write_val_curve(runs["20260101-000010-mt0"], {10: 0.8, 20: 0.8, 30: 0.8, 40: 0.7})
    t = build_table(spec, root, preset="smoke")
    base, mt = row_convergence(t)  # rows without runs (cited, future) have no curve
    assert (base.row_id, base.n, base.steps, mt.row_id, mt.n) == ("base", 3, 40, "mt", 1)
    assert base.at == pytest.approx((100 / 3, 140 / 3, 60.0, 191 / 3))
    assert base.best == pytest.approx(193 / 3) and base.gain == pytest.approx(11 / 3)
    assert base.gain_std == pytest.approx(np.std([2.0, 1.0, 8.0], ddof=1))
    assert base.trend == "rising" and mt.trend == "falling" and mt.gain == pytest.approx(-10.0)
    assert math.isnan(mt.gain_std)
    md = render_convergence(t, "md")
    assert "| U-Net | 3 | 40 | 33.33 | 46.67 | 60.00 | 63.67 | 64.33 | +3.67 ± 3.79 | **rising** |" in md
    assert "| MT | 1 | 40 | 80.00 | 80.00 | 80.00 | 70.00 | 80.00 | -10.00 | **falling** |" in md
    args = ["table", tmp_path / "T.yaml", "--results", root, "--preset", "smoke", "--convergence"]
    assert cli(*args, "--tables-dir", tmp_path / "tables") == 0
    assert capsys.readouterr().out == md
    rows = list(csv.DictReader((tmp_path / "tables" / "T-smoke.convergence.csv").open()))
    assert [(r["row"], r["trend"]) for r in rows] == [("base", "rising"), ("mt", "falling")]
    assert float(rows[0]["val_at_75"]) == pytest.approx(60.0)
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "T-smoke.convergence.csv",
        "T-smoke.convergence.md",
    ]
    # a run without a log drops out of its row; a NaN validation is no best
    (runs["20260101-000002-u2"] / "metrics.jsonl").unlink()
    _write_val_curve(runs["20260101-000001-u1"], {10: 0.4, 20: float("nan"), 30: 0.6, 40: 0.61})
    base, _ = row_convergence(t)
    assert base.n == 2 and base.best == pytest.approx(66.5) and math.isnan(base.at[1])


def test_provenance_names_runs_hashes_and_git(synthetic):
    from ssl_bench.reporting.tables import build_table, provenance

    spec, root = synthetic
    prov = provenance(build_table(spec, root, preset="smoke"))
    cell = next(c for c in prov["cells"] if c["row"] == "base" and c["column"] == "RV")
    assert [r["run_id"] for r in cell["runs"]] == ["20260101-000000-u0", "20260101-000001-u1", "20260101-000002-u2"]
    assert [r["git_sha"] for r in cell["runs"]] == [f"{s:040d}" for s in (0, 1, 2)]
    folders = {d.name: d for d in root.rglob("2026*") if (d / "manifest.json").exists()}
    hashes = [json.loads((folders[r["run_id"]] / "manifest.json").read_text())["config_hash"] for r in cell["runs"]]
    assert [r["config_hash"] for r in cell["runs"]] == hashes
    assert [r["value"] for r in cell["runs"]] == pytest.approx([70.0, 60.0, 80.0])
    assert cell["duplicates_ignored"] == 1 and cell["n"] == 3
    assert prov["preset"] == "smoke" and prov["seeds"] == [0, 1, 2]
    # the inputs' content, by hand: sha256 over name + bytes of the config and the scores the cell read
    digest = hashlib.sha256()
    for name in ("config.yaml", "eval/test/per_case.csv", "eval/test/summary.json"):
        digest.update(name.encode() + b"\0" + (folders["20260101-000000-u0"] / name).read_bytes() + b"\0")
    assert cell["runs"][0]["sha256"] == digest.hexdigest()
    assert prov["spec"] == {"file": "T.yaml", "sha256": hashlib.sha256(spec.path.read_bytes()).hexdigest()}


def test_rendering_is_deterministic_and_independent_of_where_records_lie(synthetic, tmp_path, monkeypatch):
    """The same records give byte-identical files: rendered twice, from a copy of the records elsewhere and from
    another working directory; no path, git state or count of other runs found gets into them."""
    import shutil

    from ssl_bench.reporting.tables import build_table, write_table

    spec, root = synthetic
    fake_run(tmp_path / "other", "vat", 0, MT0, 5.0, "20260101-000020-vat0")  # a run no cell uses
    copy = tmp_path / "elsewhere" / "records"
    shutil.copytree(root, copy)
    rendered = []
    for i, (dirs, cwd) in enumerate([([root], tmp_path), ([root], tmp_path), ([copy, tmp_path / "other"], copy)]):
        monkeypatch.chdir(cwd)
        written = write_table(build_table(spec, dirs, preset="smoke"), tmp_path / f"out{i}")
        rendered.append({p.name: p.read_bytes() for p in written})
    assert rendered[0] == rendered[1] == rendered[2]
    prov = rendered[0]["T-smoke.provenance.json"].decode()
    assert str(tmp_path) not in prov and "runs" in json.loads(prov)["cells"][0]
    assert "git_state" not in prov and "results_dirs" not in prov and "generated_by" not in prov
    assert "4 run(s) used" in rendered[0]["T-smoke.md"].decode()


def test_missing_runs_commands_resume_and_blocked(synthetic, tmp_path):
    from ssl_bench.reporting.tables import build_table, plan_missing, render_missing

    spec, root = synthetic
    # mean-teacher: seed 1 was killed (resume it), seed 2 is still being written (leave it alone)
    killed = fake_run(root, "mean-teacher", 1, MT0, 8.0, "20260101-000011-mt1", status="interrupted")
    active = fake_run(root, "mean-teacher", 2, MT0, 8.0, "20260101-000012-mt2", status="running")
    t = build_table(spec, root, preset="smoke")
    plan = plan_missing(t)
    by = {(m.selector.method, m.seed): m for m in plan}
    assert set(by) == {
        ("mean-teacher", 1),
        ("mean-teacher", 2),
        ("not-a-method", 0),
        ("not-a-method", 1),
        ("not-a-method", 2),
    }
    assert by[("mean-teacher", 1)].action == "resume" and by[("mean-teacher", 1)].run_dir == killed
    assert by[("mean-teacher", 2)].action == "active"
    assert by[("not-a-method", 0)].action == "blocked"
    text = render_missing(t, plan, "OUT")
    assert f"ssl-bench resume {killed}" in text
    assert "ssl-bench run" not in text  # nothing new to start
    assert "Future (3 run(s)): method 'not-a-method' is not registered yet" in text
    # the cost of the resume, from the finished run of its setting (seed 0: 60 s training + 1 s test)
    assert by[("mean-teacher", 1)].cost_s == 61.0 and by[("mean-teacher", 1)].cost_runs == 1
    assert "#   mean-teacher on cardiac-phantom, labelled 0.2, preset smoke: 1 min (from 1 run(s)) x 1 to run" in text
    assert "# total: 1 min of runs one after another (" in text
    assert "paper-only rows (results cited by the paper, nothing to run): Cited" in text
    # once the "running" one is stale, it is resumed too
    old = time.time() - 3600
    for f in active.iterdir():
        import os

        os.utime(f, (old, old))
    assert {m.action for m in plan_missing(t) if m.selector.method == "mean-teacher"} == {"resume"}
    # an empty results folder: every runnable cell is a `ssl-bench run` command with the exact flags
    empty = build_table(spec, tmp_path / "empty", preset="smoke")
    text = render_missing(empty, plan_missing(empty), "OUT")
    for seed in (0, 1, 2):
        for method in ("unet", "mean-teacher"):
            cmd = (
                f"ssl-bench run --method {method} --dataset cardiac-phantom --labeled 0.2 --seed {seed} --preset smoke"
            )
            assert f"{cmd} --out OUT" in text.splitlines()
    assert "#   unet on cardiac-phantom, labelled 0.2, preset smoke: no finished run yet (3 to run)" in text
    assert "plus 6 run(s) of settings with no finished run yet" in text


def test_missing_runs_cost_is_the_median_of_the_setting_s_finished_runs(synthetic):
    from ssl_bench.reporting.tables import build_table, plan_missing

    spec, root = synthetic
    # a fourth seed: unet's finished runs took 61, 61 (a repeat of seed 0), 62 and 63 s; a run of another setting
    # (trainer.epochs=7) does not count
    fake_run(root, "unet", 5, MT0, 8.0, "20260101-000030-u5", overrides={"trainer.epochs": 7})
    plan = plan_missing(build_table(spec, root, preset="smoke", seeds=[0, 1, 2, 3]))
    unet = next(m for m in plan if m.selector.method == "unet")
    assert (unet.seed, unet.cost_s, unet.cost_runs) == (3, 61.5, 4)


def test_missing_runs_row_or_seed_order(synthetic, tmp_path):
    """``--order row``: every seed of a row, then the next; ``--order seed``: seed 0 of every row first. Resumes
    come first either way."""
    from ssl_bench.reporting.tables import build_table, plan_missing

    spec, root = synthetic
    empty = build_table(spec, tmp_path / "empty", preset="smoke")

    def runnable(order: str) -> list[tuple[str, int]]:
        return [(m.selector.method, m.seed) for m in plan_missing(empty, order=order) if m.action == "run"]

    assert runnable("row") == [(m, s) for m in ("unet", "mean-teacher") for s in (0, 1, 2)]
    assert runnable("seed") == [(m, s) for s in (0, 1, 2) for m in ("unet", "mean-teacher")]
    killed = fake_run(root, "mean-teacher", 2, MT0, 8.0, "20260101-000012-mt2", status="interrupted")
    plan = plan_missing(build_table(spec, root, preset="smoke"), order="seed")
    assert plan[0].action == "resume" and plan[0].run_dir == killed
    with pytest.raises(ValueError, match="order must be one of row, seed"):
        plan_missing(empty, order="column")


def test_selector_command_flags():
    from ssl_bench.reporting.tables import cell_selector, get_spec, parse_dataset_map

    spec = get_spec("VIII")
    row = spec.row("endo-a2")
    sel = cell_selector(spec, row, spec.columns[0], "cpu")
    assert (
        sel.command(0, "R")
        == (
            "ssl-bench run --method coranet --dataset york-endocardium --labeled 0.2 --seed 0 --preset cpu "
            "--estimator crm --set params.alpha=2 --out R"
        ).split()
    )
    vi = get_spec("VI")
    three_d = cell_selector(vi, vi.row("tta"), vi.columns[1], "paper")
    assert (three_d.dataset, three_d.labeled, three_d.backbone, three_d.estimator) == (
        "pancreas-ct-3d",
        12,
        "vnet",
        "tta",
    )
    mapped = cell_selector(
        vi, vi.row("tta"), vi.columns[0], "smoke", parse_dataset_map(["pancreas-ct=pancreas-phantom"])
    )
    assert mapped.dataset == "pancreas-phantom"
    assert parse_dataset_map(["cardiac-phantom"]) == {"*": "cardiac-phantom"}


# -- the commands ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["md", "tex", "csv", "html"])
def test_every_table_renders_on_empty_results(cli, capsys, tmp_path, fmt):
    (tmp_path / "none").mkdir()  # an empty results folder (a missing one is an error: issue #18)
    for tid in TABLE_IDS:
        code = cli("table", tid, "--results", tmp_path / "none", "--format", fmt, "--tables-dir", tmp_path / "t")
        out = capsys.readouterr().out
        assert code == 0
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(out)))
            assert rows and all(r["mean"] == "" for r in rows)
            assert any(r["paper"] for r in rows)
        else:
            assert "—" in out or "---" in out  # measured cells are empty
        for ext in ("md", "tex", "csv", "provenance.json"):
            assert (tmp_path / "t" / f"{tid}-cpu.{ext}").exists()


def test_table_set_bad_input(cli, capsys, tmp_path):
    """--set without '=' is refused; an unknown key makes every runnable cell blocked, with the config error."""
    assert cli("table", "IX", "--results", tmp_path, "--no-write", "--set", "bogus") == 2
    assert "--set 'bogus': expected KEY=VALUE" in capsys.readouterr().err
    # a key no config has is refused before any run is read (issue #18); a method option unknown to some rows
    # blocks those rows' cells, with the config error
    assert cli("table", "IX", "--results", tmp_path, "--missing", "--set", "trainer.bogus=1") == 2
    assert "unknown config key 'trainer.bogus'" in capsys.readouterr().err
    assert cli("table", "IX", "--results", tmp_path, "--missing", "--set", "params.bogus=1") == 0
    out = capsys.readouterr().out
    assert "0 can be started now" in out and "unknown config key 'params.bogus'" in out
    assert not list(tmp_path.rglob("*.md"))


def test_table_ix_paper_rows_and_missing_on_empty(cli, capsys, tmp_path):
    assert cli("table", "ix", "--results", tmp_path, "--no-write") == 0
    out = capsys.readouterr().out
    assert "| Ours (CoraNet) | — | 82.69 (0.48) | — | 84.87 (0.55) | — | 90.74 (0.84) | — | 86.10 (0.62) |" in out
    assert "| DCT-Seg [43] (paper only) | — | 78.20 (0.70) |" in out
    assert not list(tmp_path.rglob("*.md"))
    assert cli("table", "IX", "--results", tmp_path, "--missing") == 0
    out = capsys.readouterr().out
    assert f"ssl-bench run --method coranet --dataset acdc --labeled 0.2 --seed 2 --preset cpu --out {tmp_path}" in out
    assert "paper-only rows" in out and "DCT-Seg [43]" in out


def test_table_from_real_smoke_runs(cli, capsys, smoke_tree, tmp_path):  # noqa: F811
    """Table IX protocol on the phantom: per-class cells from real per_case.csv files, checked by hand against
    each run's summary.json (written by the evaluator, independently of the table code)."""
    from ssl_bench.reporting.tables import build_table, render

    # the smoke tree's runs were made with `--set` FAST: without it, they fill no cell of the plain smoke preset
    plain = build_table("IX", smoke_tree, preset="smoke", seeds=[0, 1], dataset_map={"acdc": "cardiac-phantom"})
    assert plain.measured_cells == 0
    t = build_table(
        "IX", smoke_tree, preset="smoke", seeds=[0, 1], dataset_map={"acdc": "cardiac-phantom"}, overrides=FAST
    )
    unet = [json.loads((d / "eval/test/summary.json").read_text()) for d in _run_dirs(smoke_tree, "unet")]
    for col, key in (("RV", "1"), ("Myo", "2"), ("LV", "3")):
        per_run = [100 * s["classes"][key]["dice"]["mean"] for s in unet]
        cell = t.cell("unet", col)
        assert cell.n == 2
        assert cell.mean == pytest.approx(np.mean(per_run)) and cell.std == pytest.approx(np.std(per_run, ddof=1))
    per_run = [100 * s["foreground_mean"]["dice"] for s in unet]
    assert t.cell("unet", "mean").mean == pytest.approx(np.mean(per_run))
    mt = t.cell("mt", "mean")
    assert mt.n == 1 and t.cell("ours", "mean").n == 1 and not t.cell("pl", "mean").measured
    # measured on a substitute dataset: the paper's ACDC value is shown as such, with no difference to it
    assert mt.paper == 84.25 and mt.paper_dataset == "acdc" and mt.delta is None
    assert "84.25 (0.56) on acdc" in render(t, "md") and "Δ" not in render(t, "md").split("\n1. ")[0]
    assert t.cell("fully", "RV").n == 0
    # Wilcoxon of MT against U-Net on per-case Myo Dice, by hand from the CSV files
    import pandas as pd

    def myo(d: Path) -> pd.Series:
        pc = pd.read_csv(d / "eval/test/per_case.csv", dtype={"case": str})
        return pc[pc["class"] == 2].set_index("case")["dice"]

    base = pd.concat([myo(d) for d in _run_dirs(smoke_tree, "unet")], axis=1).mean(axis=1)
    other = myo(_run_dirs(smoke_tree, "mean-teacher")[0])
    pair = pd.concat([other, base], axis=1).dropna()
    if (pair.iloc[:, 0] != pair.iloc[:, 1]).any():
        assert t.cell("mt", "Myo").p_value == pytest.approx(wilcoxon(pair.iloc[:, 0], pair.iloc[:, 1]).pvalue)
    # through the CLI, with files and records
    args = ["table", "IX", "--results", smoke_tree, "--preset", "smoke", "--dataset", "acdc=cardiac-phantom"]
    args += ["--seeds", "0", "1", "--tables-dir", tmp_path / "tables", "--export-records", tmp_path / "records"]
    for key, value in FAST.items():
        args += ["--set", f"{key}={value}"]
    assert cli(*args) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| U-Net \(labelled only\) \(not in paper\) \| [\d.*]+ ± [\d.]+ \(n=2\)", out)
    assert "(preset `smoke`, `--set trainer.epochs=2` `--set trainer.iters_per_epoch=1`" in out
    stem = "IX-smoke-cardiac-phantom-epochs2-iters_per_epoch1-val_every0"
    assert (tmp_path / "tables" / f"{stem}.tex").exists()
    prov = json.loads((tmp_path / "tables" / f"{stem}.provenance.json").read_text())
    assert prov["overrides"] == {key: str(value) for key, value in FAST.items()}
    cell = next(c for c in prov["cells"] if c["row"] == "unet" and c["column"] == "RV")
    assert sorted(r["seed"] for r in cell["runs"]) == [0, 1] and all(r["git_sha"] for r in cell["runs"])
    # the records alone regenerate the same table
    again = build_table(
        "IX",
        tmp_path / "records",
        preset="smoke",
        seeds=[0, 1],
        dataset_map={"acdc": "cardiac-phantom"},
        overrides=FAST,
    )
    assert again.cell("unet", "mean").mean == pytest.approx(t.cell("unet", "mean").mean)
    assert not list((tmp_path / "records").rglob("*.pt"))


def test_run_missing_runs_and_resumes(tmp_path, monkeypatch):
    """--run-missing launches `ssl-bench run` / `resume` subprocesses (here stubbed), jobs in parallel."""
    import subprocess

    from ssl_bench.reporting import tables

    spec = tables.load_spec(_write(tmp_path / "T.yaml", SPEC))
    root = tmp_path / "runs"
    killed = fake_run(root, "unet", 0, UNET[0], 10.0, "20260101-000000-k", status="failed")
    t = tables.build_table(spec, root, preset="smoke")
    plan = tables.plan_missing(t)
    calls = []

    def fake_run_proc(cmd, env=None, **kw):
        calls.append((cmd, env["OMP_NUM_THREADS"]))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(tables.missing.subprocess, "run", fake_run_proc)
    ended = []
    done = tables.run_missing(
        plan, root, jobs=2, threads=3, echo=lambda s: None, on_finish=lambda e, c: ended.append(c)
    )
    assert len(done) == 6 and all(code == 0 for _, code in done) and ended == [0] * 6
    cmds = [c[c.index("ssl_bench") + 1 :] for c, _ in calls]
    assert ["resume", str(killed), "--threads", "3", "--no-progress"] in cmds
    runs = [c for c in cmds if c[0] == "run"]
    assert len(runs) == 5 and all("--out" in c and c[c.index("--out") + 1] == str(root) for c in runs)
    assert {threads for _, threads in calls} == {"3"}
    assert (root / "_logs").is_dir()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_leaderboard(cli, capsys, synthetic):
    from ssl_bench.reporting.leaderboard import leaderboard

    _, root = synthetic
    lb = leaderboard(root, metric="dice")
    assert list(lb["method"]) == ["mean-teacher", "unet"]
    assert list(lb["rank"]) == [1, 2]
    unet = lb[lb["method"] == "unet"].iloc[0]
    # 3 seeds, each counted once (the old duplicate of seed 0 is not: newest wins, as in tables)
    assert unet["n_runs"] == 3 and unet["duplicates"] == 1
    assert unet["mean"] == pytest.approx(100 * (0.7 + 1.9 / 3 + 2.3 / 3) / 3)
    assert unet["train_s"] == pytest.approx((60 + 61 + 62) / 3) and unet["params_inference"] == 900
    assert lb.iloc[0]["git_shas"] == "0000000"
    hd = leaderboard(root, metric="hd95_vox")
    assert list(hd["method"]) == ["mean-teacher", "unet"]  # lower is better
    assert cli("leaderboard", "--results", root, "--dataset", "cardiac-phantom") == 0
    out = capsys.readouterr().out
    assert "| 1 | mean-teacher | — | — | unet2d |" in out and "params train/test" in out
    assert cli("leaderboard", "--results", root, "--format", "csv", "--labeled", "0.5") == 0
    assert capsys.readouterr().out.strip().startswith("rank,")
    # a run with another setting (here a longer schedule) is its own row, named by what differs
    fake_run(
        root, "unet", 0, {k: [0.2] * 6 for k in (1, 2, 3)}, 1.0, "20270101-000000-long", overrides={"trainer.epochs": 7}
    )
    lb = leaderboard(root, metric="dice")
    assert list(lb["variant"]) == ["", "", "trainer.epochs=7"] and list(lb["rank"]) == [1, 2, 1]  # its own ranking
    assert lb.iloc[2]["n_runs"] == 1 and lb.iloc[2]["mean"] == pytest.approx(20.0)
    assert cli("leaderboard", "--results", root) == 0
    assert "variant trainer.epochs=7\n\n| rank" in (out := capsys.readouterr().out)
    assert "| 1 | unet | — | — | unet2d | 20.00 | 1 * |" in out


def test_a_spec_file_of_ones_own_renders_like_a_paper_table(capsys, tmp_path):
    """`ssl-bench table FILE.yaml` loads the spec from the file (benchmarks/acdc_baselines.yaml is one)."""
    from ssl_bench.cli.main import main

    spec = Path(__file__).resolve().parents[1] / "benchmarks" / "acdc_baselines.yaml"
    code = main(["table", str(spec), "--results", str(tmp_path), "--missing", "--seeds", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ssl-bench run --method temporal-ensembling --dataset acdc --labeled 0.2 --seed 0 --preset cpu" in out
    assert main(["table", str(tmp_path / "nope.yaml")]) == 2
    assert "table spec file" in capsys.readouterr().err


# -- checkpoint columns, reference rows, distance units (issue #15 item 3, issue #14) -------------------------------

CKPT_SPEC = """
id: C
title: "checkpoints"
dataset: cardiac-phantom
labeled: 0.2
seeds: [0, 1]
baseline: base
set: {trainer.select: both}
columns:
  - {key: RV, label: "DSC RV", group: "val-selected", metric: dice, class: 1}
  - {key: mean, label: "DSC mean", group: "val-selected", metric: dice}
  - {key: hd, label: "HD95", group: "val-selected", metric: hd95}
  - {key: RV-last, label: "DSC RV", group: "last", metric: dice, class: 1, checkpoint: last}
  - {key: mean-last, label: "DSC mean", group: "last", metric: dice, checkpoint: last}
  - {key: hd-last, label: "HD95", group: "last", metric: hd95, checkpoint: last}
rows:
  - {id: base, label: "U-Net", method: unet, in_paper: false}
  - {id: mt, label: "MT", method: mean-teacher, in_paper: false}
  - {id: future, label: "Future", method: not-a-method, in_paper: false}
  - id: ref-big
    label: "Big"
    group: "Reported"
    method: null
    source: "Someone et al., Venue 2024, Tab. 2"
    paper: {RV: 99.5, hd: 0.5}
  - {id: ref-other, label: "Other", group: "Reported", method: null, source: "Other README", paper: {mean: [88.0, 1.0]}}
"""
# RV Dice of the 6 test cases per (method, seed): (best-on-val model, last model)
CK_RV = {
    ("unet", 0): ([0.6] * 6, [0.5] * 6),
    ("unet", 1): ([0.8] * 6, [0.7] * 6),
    ("mean-teacher", 0): ([0.9, 0.8, 0.9, 0.8, 0.9, 0.6], [0.1, 0.2, 0.1, 0.2, 0.1, 0.2]),
}
CK_HD = {"selected": 10.0, "last": 20.0}


def _ck_scores(root: Path, folder: str, rv: list[float], hd: float, unit: str) -> None:
    from ssl_bench.evaluation.evaluate import summarize, write_eval

    rows = []
    for i, case in enumerate(CASES):
        for k, d in ((1, rv[i]), (2, 0.5), (3, 0.9)):
            rows.append({"case": case, "class": k, "dice": d, "hd95": hd, "asd": hd / 4})
    write_eval(root / "eval" / folder, rows, summarize(rows, ["bg", "RV", "Myo", "LV"], unit))


def ck_run(root: Path, method: str, seed: int, name: str, last: bool = True, unit: str = "mm") -> Path:
    """A finished ``trainer.select=both`` run: eval/test (best-on-val) and, if ``last``, eval/test-last."""
    sel, lst = CK_RV.get((method, seed), ([0.3] * 6, [0.3] * 6))
    run_dir = fake_run(root, method, seed, {k: [0.0] * 6 for k in (1, 2, 3)}, 0.0, name, overrides=CKPT_SET)
    _ck_scores(run_dir, "test", sel, CK_HD["selected"], unit)
    if last:
        _ck_scores(run_dir, "test-last", lst, CK_HD["last"], unit)
    return run_dir


CKPT_SET = {"trainer.select": "both"}


@pytest.fixture
def ckpt(tmp_path):
    from ssl_bench.reporting.tables import load_spec

    root = tmp_path / "runs"
    for method, seed in CK_RV:
        ck_run(root, method, seed, f"20260101-00000{seed}-{method}{seed}")
    return load_spec(_write(tmp_path / "C.yaml", CKPT_SPEC)), root


def test_checkpoint_columns_read_eval_test_last_with_wilcoxon_per_column(ckpt):
    from ssl_bench.reporting.tables import build_table, provenance, render

    spec, root = ckpt
    assert [c.checkpoint for c in spec.columns] == ["selected"] * 3 + ["last"] * 3
    t = build_table(spec, root, preset="smoke")
    assert t.cell("base", "RV").mean == pytest.approx(70.0) and t.cell("base", "RV-last").mean == pytest.approx(60.0)
    assert t.cell("base", "RV").std == pytest.approx(100 * np.std([0.6, 0.8], ddof=1))
    assert t.cell("base", "hd").mean == pytest.approx(10.0) and t.cell("base", "hd-last").mean == pytest.approx(20.0)
    mt, mt_last = t.cell("mt", "RV"), t.cell("mt", "RV-last")
    assert mt.mean == pytest.approx(100 * np.mean(CK_RV[("mean-teacher", 0)][0]))
    assert mt_last.mean == pytest.approx(15.0)
    assert t.cell("mt", "mean-last").mean == pytest.approx(100 * (0.15 + 0.5 + 0.9) / 3)
    # bold per column: MT is best on the val-selected RV, U-Net on the last one
    assert mt.best and not t.cell("base", "RV").best
    assert t.cell("base", "RV-last").best and not mt_last.best
    # the paired Wilcoxon against the baseline, per column, on that column's checkpoint (by hand)
    base_sel = np.mean([CK_RV[("unet", s)][0] for s in (0, 1)], axis=0)
    base_last = np.mean([CK_RV[("unet", s)][1] for s in (0, 1)], axis=0)
    p_sel = wilcoxon(CK_RV[("mean-teacher", 0)][0], base_sel).pvalue
    p_last = wilcoxon(CK_RV[("mean-teacher", 0)][1], base_last).pvalue
    assert p_last == pytest.approx(2 / 64) and not math.isclose(p_sel, p_last)
    assert mt.p_value == pytest.approx(p_sel) and mt_last.p_value == pytest.approx(p_last)
    # rendering: two column groups in every format; CSV and provenance say which checkpoint each cell read
    md = render(t, "md")
    assert "| Method | val-selected DSC RV | val-selected DSC mean | val-selected HD95 (mm) | last DSC RV |" in md
    assert r"last HD95 (mm) \\" in render(t, "tex") and "<th>last DSC RV</th>" in render(t, "html")
    rows = list(csv.DictReader(io.StringIO(render(t, "csv"))))
    last_rv = next(r for r in rows if r["row"] == "mt" and r["column"] == "RV-last")
    assert (last_rv["checkpoint"], last_rv["column_group"]) == ("last", "last")
    assert float(last_rv["mean"]) == pytest.approx(15.0) and float(last_rv["p_value"]) == pytest.approx(p_last)
    prov = provenance(t)
    cell = next(c for c in prov["cells"] if c["row"] == "base" and c["column"] == "RV-last")
    assert cell["checkpoint"] == "last" and {r["scores"] for r in cell["runs"]} == {"eval/test-last"}
    assert [r["value"] for r in cell["runs"]] == pytest.approx([50.0, 70.0])


def test_missing_test_last_gives_empty_cells_not_missing_runs(ckpt):
    from ssl_bench.reporting.tables import build_table, plan_missing, render, render_missing, scores_folder

    spec, root = ckpt
    # mean-teacher seed 1 finished without eval/test-last (e.g. made before trainer.select=both existed)
    no_last = ck_run(root, "mean-teacher", 1, "20260101-000001-mt1", last=False)
    t = build_table(spec, root, preset="smoke")
    assert t.cell("mt", "RV").n == 2
    last = t.cell("mt", "RV-last")
    assert last.n == 1 and [r.run_id for r in last.unscored] == [no_last.name]
    assert last.mean == pytest.approx(15.0)  # seed 0's last model only
    plan = plan_missing(t)
    assert {(m.selector.method, m.action) for m in plan} == {("not-a-method", "blocked")}  # nothing to re-run
    md = render(t, "md")
    assert "1 finished run(s) have no scores of a column's checkpoint" in md
    # a run with no eval/test-last at all: every last cell of it is empty ("—"), not an error
    only = build_table(spec, root, preset="smoke", seeds=[1])
    assert not only.cell("mt", "RV-last").measured and only.cell("mt", "RV").measured
    line = next(x for x in render(only, "md").splitlines() if x.startswith("| MT |"))
    assert line.count("—") == 3 and "(n=1)" in line
    assert "ssl-bench run" not in render_missing(only, plan_missing(only), "OUT")
    # eval/test that is itself the last model (trainer.select=last, or no validation) serves a last column
    summary = no_last / "eval" / "test" / "summary.json"
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "checkpoint": "last (step 6)"}))
    rec = next(c for c in build_table(spec, root, preset="smoke").cell("mt", "RV").runs if c.run_id == no_last.name)
    assert scores_folder(rec, "last") == "test" and scores_folder(rec, "selected") == "test"
    assert build_table(spec, root, preset="smoke").cell("mt", "RV-last").n == 2
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        scores_folder(rec, "best")


def test_reference_rows_render_with_sources_and_stay_out_of_statistics(ckpt, tmp_path):
    from ssl_bench.core.errors import ConfigError
    from ssl_bench.reporting.tables import build_table, load_spec, plan_missing, render, render_missing

    spec, root = ckpt
    big = spec.row("ref-big")
    assert big.paper_only and big.source == "Someone et al., Venue 2024, Tab. 2"
    assert big.paper["RV"] == (99.5, None) and big.paper["mean"] == (None, None)  # with a source: partial values
    t = build_table(spec, root, preset="smoke")
    ref = t.cell("ref-big", "RV")
    assert not ref.measured and ref.n == 0 and not ref.best and ref.p_value is None and ref.paper == 99.5
    assert t.cell("mt", "RV").best  # 99.5 is higher, but reported: never the best measured value
    assert t.cell("ref-big", "hd").paper == 0.5 and t.cell("base", "hd").best is False  # all measured HD equal
    md = render(t, "md")
    assert "| Big (reported [a]) | 99.50 | - | 0.50 | - | - | - |" in md
    assert "| Other (reported [b]) | - | 88.00 (1.00) | - |" in md
    assert "[a] Someone et al., Venue 2024, Tab. 2; [b] Other README." in md
    assert "never measured here: they are never bold, never in the † test" in md
    assert "paper" not in md.split("\n| ")[1]  # no "paper" columns: no measured row has paper values
    assert "(not in paper)" not in md
    tex = render(t, "tex")
    assert "Big (reported [a]) & 99.50 & - & 0.50" in tex
    rows = list(csv.DictReader(io.StringIO(render(t, "csv"))))
    big_rv = next(r for r in rows if r["row"] == "ref-big" and r["column"] == "RV")
    assert big_rv["reference"] == "True" and big_rv["mean"] == "" and float(big_rv["paper"]) == 99.5
    assert big_rv["source"] == "Someone et al., Venue 2024, Tab. 2" and big_rv["runnable"] == "False"
    assert all(r["reference"] == "False" for r in rows if r["row"] in ("base", "mt"))
    text = render_missing(t, plan_missing(t), "OUT")
    assert "# reference rows (published numbers, nothing to run): Big; Other" in text
    assert not [m for m in plan_missing(t) if m.selector.method is None]
    # an unregistered method renders as a blocked row, in every format
    assert "Future (not runnable yet)" in md and "Future: method 'not-a-method' is not registered yet" in md
    assert "Future (2 run(s)): method 'not-a-method' is not registered yet" in text
    for fmt in ("tex", "csv", "html"):
        assert "Future" in render(t, fmt)
    # without a source, a paper row still needs a value (or null) for every column
    bad = CKPT_SPEC.replace('source: "Other README", ', "")
    with pytest.raises(ConfigError, match="paper values needed for every column"):
        load_spec(_write(tmp_path / "bad.yaml", bad))
    with pytest.raises(ConfigError, match="checkpoint must be one of"):
        load_spec(_write(tmp_path / "bad2.yaml", CKPT_SPEC.replace("checkpoint: last}", "checkpoint: final}", 1)))


def test_distance_unit_labels(ckpt, tmp_path):
    from ssl_bench.reporting.tables import build_table, get_spec, header, load_spec, render

    spec, root = ckpt
    hd = spec.columns[2]
    # from the runs' summary.json
    t = build_table(spec, root, preset="smoke")
    assert t.unit_of(hd) == ("mm", True) and header(t, hd) == "val-selected HD95 (mm)"
    assert "HD95 = hd95 in mm (from the runs' summary.json)" in render(t, "md")
    vox = tmp_path / "vox"
    ck_run(vox, "unet", 0, "20260101-000000-v", unit="voxel")
    t = build_table(spec, vox, preset="smoke", seeds=[0])
    assert header(t, hd) == "val-selected HD95 (voxel)" and header(t, spec.columns[5]) == "last HD95 (voxel)"
    assert next(r for r in csv.DictReader(io.StringIO(render(t, "csv"))) if r["column"] == "hd")["unit"] == "voxel"
    # runs in both units in one column: both named
    ck_run(vox, "unet", 1, "20260101-000001-m")
    assert build_table(spec, vox, preset="smoke").unit_of(hd) == ("mm/voxel", True)
    # no run: the dataset's default (ACDC's SSL4MIS copy has no spacing: voxels; the phantom has one: mm)
    empty = build_table(spec, tmp_path / "none", preset="smoke")
    assert empty.unit_of(hd) == ("mm", False) and "(the dataset's default unit; no run read yet)" in render(empty, "md")
    acdc = build_table(load_spec(REPO / "benchmarks" / "acdc_cpu.yaml"), tmp_path / "none", preset="cpu-bench")
    assert "val-selected HD95 (voxel)" in render(acdc, "md") and "last ASD (voxel)" in render(acdc, "md")
    # a label naming its unit is left alone; *_vox metrics are voxels whatever the data
    ii = build_table(get_spec("II"), tmp_path / "none")
    vox_col = next(c for c in ii.spec.columns if c.metric == "hd95_vox")
    assert header(ii, vox_col) == vox_col.header and ii.unit_of(vox_col) == ("voxel", True)


FIELD = REPO.parent / "shared" / "FIELD.md"
#: reference row id -> the method cell of its line in ../shared/FIELD.md's ACDC table
FIELD_ROWS = {
    "ref-unet": "U-Net, labelled only",
    "ref-fully": "U-Net, all 70 patients",
    "ref-ua-mt": "UA-MT",
    "ref-sassnet": "SASSNet",
    "ref-dtc": "DTC",
    "ref-urpc": "URPC",
    "ref-mc-net": "MC-Net",
    "ref-ss-net": "SS-Net",
    "ref-cps": "CPS",
    "ref-ctct": "Cross Teaching CNN–Transformer",
    "ref-unimatch": "UniMatch",
    "ref-unimatch-crossmatch": "UniMatch",
    "ref-bcp": "BCP",
    "ref-ad-mt": "AD-MT (ECCV'24)",
    "ref-abd": "ABD (CVPR'24)",
}
ACDC_SPECS = ("acdc_cpu.yaml", "acdc_cpu_lab3.yaml", "acdc_sota.yaml")


@pytest.mark.parametrize("name", ACDC_SPECS)
def test_acdc_benchmark_specs(name):
    """The ACDC benchmark specs: registered methods only, both checkpoints, every reference row with a source and
    numbers that are on its line of ../shared/FIELD.md."""
    from ssl_bench.core.registry import METHODS
    from ssl_bench.reporting.tables import load_spec

    spec = load_spec(REPO / "benchmarks" / name)
    assert spec.dataset == "acdc" and spec.seeds == [0, 1, 2] and spec.baseline == "unet"
    measured = [r for r in spec.rows if not r.paper_only]
    assert all(r.method in METHODS for r in measured), [r.method for r in measured if r.method not in METHODS]
    want = {"unet", "fully-supervised", "mean-teacher", "ua-mt", "coranet", "bcp", "unimatch", "abd", "cps"}
    want |= {"fixmatch", "mc-net", "urpc", "ict", "entropy-min", "pi-model", "temporal-ensembling"}
    assert want | {"pseudo-label", "vat"} <= {r.method for r in measured}
    assert {c.checkpoint for c in spec.columns} == {"selected", "last"}
    refs = [r for r in spec.rows if r.paper_only]
    assert refs and all(r.source for r in refs)
    if name == "acdc_sota.yaml":
        assert {c.labeled for c in spec.columns} == {3, 7} and {c.metric for c in spec.columns} == {"dice", "hd95"}
    else:
        assert spec.labeled == (3 if "lab3" in name else 7)
    if not FIELD.exists():
        return
    lines = {}
    for line in FIELD.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 3:
            lines.setdefault(cells[0], " ".join(cells[1:4]))
    for row in refs:
        numbers = {float(x) for x in re.findall(r"\d+\.\d+", lines[FIELD_ROWS[row.id]])}
        values = {v for v, _ in row.paper.values() if v is not None}
        assert values and values <= numbers, (row.id, values - numbers)


def test_coranet_loss_spec_rows_differ_only_in_the_main_heads_loss():
    """benchmarks/acdc_coranet_loss.yaml: its CoraNet rows resolve to configs that differ in the two losses alone."""
    from ssl_bench.reporting.tables import load_spec
    from ssl_bench.reporting.tables.cells import cell_selector, resolve_selector

    spec = load_spec(REPO / "benchmarks" / "acdc_coranet_loss.yaml")
    rows = {r.id: r for r in spec.rows}
    ce, sup, recipe = (
        resolve_selector(cell_selector(spec, rows[i], spec.columns[0], "cpu-bench"))[0]
        for i in ("coranet-ce", "coranet-sup-dice", "coranet")
    )
    assert {k for k in recipe if recipe[k] != ce.get(k)} == {"params.loss", "params.st_loss"}
    assert {k for k in recipe if recipe[k] != sup.get(k)} == {"params.st_loss"}
    assert (ce["params.loss"], ce["params.st_loss"], sup["params.loss"]) == ("ce", "ce", "ce+dice-ssl4mis")


def test_acdc_specs_missing_and_empty_render(cli, capsys, tmp_path):
    """`--missing` lists one command line per (method, seed); the tables render with their reference rows
    even with no runs."""
    bench = REPO / "benchmarks"
    assert cli("table", bench / "acdc_cpu.yaml", "--preset", "cpu-bench", "--missing", "--results", tmp_path) == 0
    out = capsys.readouterr().out
    cmds = [x for x in out.splitlines() if x.startswith("ssl-bench run ")]
    assert len(cmds) == 18 * 3 and len(set(cmds)) == len(cmds)
    assert f"ssl-bench run --method bcp --dataset acdc --labeled 7 --seed 2 --preset cpu-bench --out {tmp_path}" in cmds
    assert "# reference rows (published numbers, nothing to run): U-Net, labelled only; U-Net, all 70" in out
    assert cli("table", bench / "acdc_cpu_lab3.yaml", "--preset", "cpu-bench", "--missing", "--results", tmp_path) == 0
    out = capsys.readouterr().out
    assert "ssl-bench run --method abd --dataset acdc --labeled 3 --seed 0 --preset cpu-bench" in out
    args = ["--preset", "cpu-bench", "--results", tmp_path, "--tables-dir", tmp_path / "t"]
    assert cli("table", bench / "acdc_sota.yaml", *args) == 0
    out = capsys.readouterr().out
    assert "| ABD (CVPR 2024) (reported [d]) | 89.81 | 1.46 | - | - | 88.96 | - | - | - |" in out
    assert (
        "| UniMatch, CrossMatch's re-run (last checkpoint) (reported [d]) | - | - | 88.08 | 2.09 | - | - | 84.38 |"
        in out
    )
    assert "| BCP | — | — |" in out and "[e] ZhenZHAO/AD-MT training-logs/performance_acdc_lb7.txt" in out
    assert (tmp_path / "t" / "acdc-sota-cpu-bench.md").exists()


def test_checkpoint_columns_fill_from_real_select_both_runs(cli, capsys, tmp_path):
    """One real smoke run with trainer.select=both: the last column is its eval/test-last, the val-selected one its
    eval/test, through `ssl-bench table FILE --dataset acdc=cardiac-phantom`."""
    from ssl_bench.reporting.tables import build_table, load_spec
    from ssl_bench.training.runner import resolve_config, start_run

    sets = {**FAST, "trainer.val_every": 1, **CKPT_SET}
    cfg = resolve_config("unet", "cardiac-phantom", preset="smoke", seed=0, labeled=7, overrides=sets)
    start_run(cfg, out=tmp_path / "runs", progress=False, echo=lambda s: None)
    spec = load_spec(REPO / "benchmarks" / "acdc_cpu.yaml")
    t = build_table(
        spec, tmp_path / "runs", preset="smoke", seeds=[0], dataset_map={"acdc": "cardiac-phantom"}, overrides=sets
    )
    (run,) = t.cell("unet", "mean").runs
    for key, folder in (("mean", "test"), ("mean-last", "test-last")):
        summary = json.loads((run.path / "eval" / folder / "summary.json").read_text())
        assert t.cell("unet", key).mean == pytest.approx(100 * summary["foreground_mean"]["dice"])
        assert t.cell("unet", key.replace("mean", "hd95")).n == (
            0 if math.isnan(summary["foreground_mean"]["hd95"]) else 1
        )
    assert (
        t.unit_of(spec.columns[4])[0] == json.loads((run.path / "eval/test/summary.json").read_text())["spacing_unit"]
    )
    args = ["table", REPO / "benchmarks" / "acdc_cpu.yaml", "--results", tmp_path / "runs", "--preset", "smoke"]
    args += ["--dataset", "acdc=cardiac-phantom", "--seeds", "0", "--no-write"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert cli(*args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| U-Net (labelled only) |"))
    assert line.count("(n=1)") >= 8  # DSC per class and mean, val-selected and last
