"""The notebooks run top to bottom on the smoke preset (so they never rot)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_results import _run_dirs, smoke_tree  # noqa: F401 - session fixture shared with test_results

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient + ipykernel (pip install -e .[dev])")
nbformat = pytest.importorskip("nbformat")


def execute(name: str, cwd: Path) -> object:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def outputs(nb: object) -> str:
    text = []
    for cell in nb.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            text += [str(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(text)


def test_quickstart(smoke_tree, tmp_path, monkeypatch):  # noqa: F811
    """Phantom runs -> table -> figures. A mean-teacher run of the notebook's setting is made first, so the notebook
    trains unet only and shows that finished runs are skipped; the smoke tree's run (other settings) is not taken."""
    from ssl_bench.training.runner import resolve_config, start_run

    results = tmp_path / "results" / "runs"
    src = _run_dirs(smoke_tree, "mean-teacher")[0]
    shutil.copytree(src, results / src.relative_to(smoke_tree))
    cfg = resolve_config("mean-teacher", "cardiac-phantom", preset="smoke", seed=0, labeled=0.2)
    start_run(cfg, out=results, progress=False, echo=lambda s: None)
    monkeypatch.setenv("SSL_BENCH_RESULTS", str(results))
    monkeypatch.setenv("SSL_BENCH_NB_PRESET", "smoke")
    nb = execute("quickstart.ipynb", tmp_path)
    text = outputs(nb)
    assert "mean-teacher: a finished run exists, skipped" in text
    assert "Table IX" in text and "U-Net (labelled only)" in text
    assert len(list(results.glob("cardiac-phantom/unet/*/seed0/*/eval/test/summary.json"))) == 1
    figures = tmp_path / "results" / "figures"
    assert (figures / "quickstart-overlays.png").exists() and (figures / "quickstart-curves.pdf").exists()
    assert any(
        o.get("output_type") == "display_data" or "image/png" in o.get("data", {})
        for c in nb.cells
        for o in c.get("outputs", [])
    )


def test_results_notebook(smoke_tree, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SSL_BENCH_RESULTS", str(smoke_tree))
    monkeypatch.chdir(tmp_path)  # no results/records here: the smoke tree only
    nb = execute("results.ipynb", tmp_path)
    text = outputs(nb)
    assert "4 runs x cases x classes x metrics" in text.replace(f"{_rows(smoke_tree)} rows: ", "")
    assert "mean-teacher" in text and "coranet" in text
    assert (smoke_tree.parent / "figures" / "results-dice.png").exists()
    assert os.environ["SSL_BENCH_RESULTS"] == str(smoke_tree)


def _rows(tree: Path) -> int:
    from ssl_bench.reporting.results import load_runs

    return len(load_runs(tree))
