"""Table VI with an extra estimator (no YAML copy), rows without paper values, fig3/fig4 on NaN-only records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_bench.core.errors import ConfigError, RunDirError

ROOT = Path(__file__).resolve().parents[1]
MARGIN = ROOT / "examples" / "margin_estimator.py"


def test_table_vi_add_estimator_missing_lists_its_runs(cli, capsys):
    code = cli("table", "VI", "--add-estimator", "margin", "--plugin", MARGIN, "--preset", "smoke", "--missing")
    out = capsys.readouterr().out
    assert code == 0
    margin = [line for line in out.splitlines() if "--estimator margin" in line]
    assert len(margin) == 2  # the 2D and the 3D column
    assert all("--method coranet" in line and f"--plugin {MARGIN}" in line for line in margin)


def test_add_estimator_rows_copies_the_crm_row():
    from ssl_bench.reporting import tables

    spec = tables.get_spec("VI")
    added = tables.add_estimator_rows(spec, ["softmax-threshold", "entropy"])
    assert added.id == "VI+softmax-threshold+entropy" and len(added.rows) == len(spec.rows) + 2
    row = added.row("entropy")
    crm = spec.row("ours")
    assert (row.method, row.estimator, row.in_paper, row.paper) == ("coranet", "entropy", False, {})
    assert (row.backbone, row.dataset, row.set) == (crm.backbone, crm.dataset, crm.set)
    assert spec.id == "VI" and len(tables.get_spec("VI").rows) == 4  # the registered spec is untouched
    result = tables.build_table(added, [], preset="smoke")
    assert result.stem.startswith("VI+softmax-threshold+entropy-smoke")
    assert "entropy (added)" in tables.render(result, "md")
    with pytest.raises(ConfigError, match="already has a row"):
        tables.add_estimator_rows(spec, ["tta"])
    with pytest.raises(ConfigError, match="no row with an estimator"):
        tables.add_estimator_rows(tables.get_spec("IX"), ["margin"])
    assert cli_error_for_unknown_estimator()


def cli_error_for_unknown_estimator() -> bool:
    from ssl_bench.core.errors import RegistryError
    from ssl_bench.reporting import tables

    with pytest.raises(RegistryError):
        tables.add_estimator_rows(tables.get_spec("VI"), ["no-such-estimator"])
    return True


def test_rows_without_paper_values_need_no_nulls(tmp_path):
    from ssl_bench.reporting.tables import load_spec

    path = tmp_path / "mine.yaml"
    path.write_text(
        "id: MINE\ntitle: t\ndataset: cardiac-phantom\nlabeled: 0.2\n"
        "columns:\n  - {key: dsc, metric: dice}\n  - {key: hd, metric: hd95_vox}\n"
        "rows:\n  - {id: a, method: coranet, estimator: margin}\n"
        "  - {id: b, method: unet, paper: {dsc: 1.0, hd: 2.0}}\n"
    )
    spec = load_spec(path)
    assert spec.row("a").in_paper is False and spec.row("a").paper == {}
    assert spec.row("b").in_paper is True
    # paper values given for some columns only are still an error (the paper's rows are complete)
    path.write_text(path.read_text().replace("paper: {dsc: 1.0, hd: 2.0}", "paper: {dsc: 1.0}"))
    with pytest.raises(ConfigError, match="paper values needed for every column"):
        load_spec(path)


def _fake_run(folder: Path, values: float) -> Path:
    """A finished-looking run folder whose metrics.jsonl holds pseudo-label quality records."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("method: coranet\nseed: 0\nparams: {estimator: tta}\n")
    (folder / "manifest.json").write_text(json.dumps({"status": "finished"}))
    rows = [
        {
            "type": "epoch",
            "epoch": e,
            "pl/certain/ppv_1": values,
            "pl/certain/tpr_1": values,
            "pl/certain/csi_1": values,
        }
        for e in (1, 2)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_fig3_on_nan_only_records_says_why(tmp_path):
    from ssl_bench.reporting.figures import pl_quality

    nan_run = _fake_run(tmp_path / "nan", float("nan"))
    with pytest.raises(RunDirError, match="hold only NaN") as info:
        pl_quality([nan_run], "certain")
    assert "no pseudo-label quality records" not in str(info.value) and "--region all" in str(info.value)
    # with a run that has values, the NaN-only run is just absent
    ok = _fake_run(tmp_path / "ok", 0.5)
    assert set(pl_quality([nan_run, ok], "certain")["value"]) == {0.5}
