"""`ssl-bench leaderboard` grouping and rendering: rankings per (dataset, budget, preset, variant), fully supervised
as an unranked upper bound, small n marked, Markdown / CSV / one self-contained sortable HTML page (rendered in
headless Chromium where one is installed)."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess

import pytest
from test_tables import MT0, UNET, fake_run

CHROMIUM = next(
    (
        shutil.which(b)
        for b in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
        if shutil.which(b)
    ),
    None,
)


def _dice(value: float) -> dict[int, list[float]]:
    return {k: [value] * 6 for k in (1, 2, 3)}


@pytest.fixture
def tree(tmp_path):
    """unet x 3 seeds (foreground mean Dice 70 ± 6.67) and mean-teacher x 1 (74.44; plain smoke), a unet variant
    (trainer.epochs=7) that scores best of all, and one fully supervised run scoring above every other."""
    root = tmp_path / "runs"
    for seed, dice in UNET.items():
        fake_run(root, "unet", seed, dice, 10.0, f"20260101-00000{seed}-u{seed}")
    fake_run(root, "mean-teacher", 0, MT0, 8.0, "20260101-000010-mt0")
    fake_run(root, "unet", 0, _dice(0.95), 1.0, "20260101-000020-long", overrides={"trainer.epochs": 7})
    fake_run(root, "fully-supervised", 0, _dice(0.99), 1.0, "20260101-000030-fs0")
    return root


def test_rankings_are_per_group_and_the_upper_bound_is_not_ranked(tree):
    from ssl_bench.reporting.leaderboard import leaderboard

    lb = leaderboard(tree, metric="dice")
    rows = {(r.method, r.variant): r for r in lb.itertuples()}
    plain = lb[lb["variant"] == ""]
    # the plain preset's group: the upper bound first, unranked; MT (74.44) above U-Net (70)
    assert list(plain["method"]) == ["fully-supervised", "mean-teacher", "unet"]
    assert pd_na(rows[("fully-supervised", "")].rank) and rows[("fully-supervised", "")].upper_bound
    assert [rows[("mean-teacher", "")].rank, rows[("unet", "")].rank] == [1, 2]
    # the variant scores 95: ranked 1 in its own group, not above the plain preset's rows
    variant = rows[("unet", "trainer.epochs=7")]
    assert variant.rank == 1 and variant.mean == pytest.approx(95.0) and not variant.upper_bound
    assert list(lb["variant"]) == ["", "", "", "trainer.epochs=7"]
    # n below --min-n is marked, not hidden
    assert rows[("mean-teacher", "")].below_min_n and not rows[("unet", "")].below_min_n
    assert not leaderboard(tree, metric="dice", min_n=1)["below_min_n"].any()
    # distances: lower is better
    hd = leaderboard(tree, metric="hd95_vox")
    assert list(hd[(hd["variant"] == "") & ~hd["upper_bound"]]["method"]) == ["mean-teacher", "unet"]


def pd_na(value) -> bool:
    import pandas as pd

    return value is pd.NA or pd.isna(value)


def test_markdown_has_a_table_per_group(tree, capsys):
    from ssl_bench.cli.main import main

    assert main(["leaderboard", "--results", str(tree)]) == 0
    out = capsys.readouterr().out
    sections = re.findall(r"^### (.+)$", out, flags=re.M)
    assert sections == [
        "cardiac-phantom · 20 % labelled · preset smoke",
        "cardiac-phantom · 20 % labelled · preset smoke · variant trainer.epochs=7",
    ]
    plain, variant = out.split("### ")[1:3]
    assert "| upper bound | fully-supervised | — | — | unet2d | 99.00 | 1 * |" in plain
    assert "| 1 | mean-teacher | — | — | unet2d | 74.44 | 1 * |" in plain
    assert re.search(r"\| 2 \| unet \| — \| — \| unet2d \| 70\.00 ± [\d.]+ \| 3 \|", plain)
    assert "| 1 | unet | — | — | unet2d | 95.00 | 1 * |" in variant and "mean-teacher" not in variant
    assert "* fewer than 3 (`--min-n`)" in out
    assert main(["leaderboard", "--results", str(tree), "--min-n", "1"]) == 0
    assert "1 *" not in capsys.readouterr().out


def test_csv_carries_the_marks(tree, capsys):
    from ssl_bench.cli.main import main

    assert main(["leaderboard", "--results", str(tree), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    by = {(r["method"], r["variant"]): r for r in rows}
    assert by[("fully-supervised", "")]["upper_bound"] == "True" and by[("fully-supervised", "")]["rank"] == ""
    assert by[("mean-teacher", "")]["below_min_n"] == "True" and by[("unet", "")]["below_min_n"] == "False"
    assert by[("unet", "trainer.epochs=7")]["rank"] == "1"


def test_bad_min_n_is_one_line(tree, capsys):
    from ssl_bench.cli.main import main

    assert main(["leaderboard", "--results", str(tree), "--min-n", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --min-n must be at least 1, got 0"


def _html(tree, tmp_path) -> str:
    from ssl_bench.cli.main import main

    out = tmp_path / "lb.html"
    assert main(["leaderboard", "--results", str(tree), "--format", "html", "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_html_is_one_self_contained_sortable_page(tree, tmp_path, capsys):
    page = _html(tree, tmp_path)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('<table class="sortable">') == 2 and "<script>" in page and "<style>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert '<tr class="upper-bound few">' in page and '<td class="n" data-sort="1">1 *</td>' in page
    assert '<td data-sort="74.44444444444444">74.44</td>' in page  # numbers sort by value, not by their text
    assert '<td class="method">mean-teacher</td>' in page  # text sorts by itself


def _row_methods(dom: str) -> list[list[str]]:
    """Per table of a dumped DOM, the method column (the second) of its rows, in order."""
    tables = re.findall(r"<tbody>(.*?)</tbody>", dom, flags=re.S)
    return [
        [re.findall(r"<td[^>]*>(.*?)</td>", row)[1] for row in re.findall(r"<tr.*?</tr>", t, flags=re.S)]
        for t in tables
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed (chromium / chromium-headless-shell)")
def test_html_renders_and_sorts_in_headless_chromium(tree, tmp_path):
    page = tmp_path / "lb.html"
    page.write_text(_html(tree, tmp_path), encoding="utf-8")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,800"]
    shot = tmp_path / "lb.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000  # a drawn page, not a blank one
    dump = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    assert _row_methods(dump.stdout)[0] == ["fully-supervised", "mean-teacher", "unet"]
    # #sort=5 clicks the dice header: ascending, so U-Net (70) before MT (74.4) before the upper bound (99)
    dump = subprocess.run(
        [*flags, "--dump-dom", page.as_uri() + "#sort=5"], capture_output=True, text=True, timeout=120, check=True
    )
    assert _row_methods(dump.stdout)[0] == ["unet", "mean-teacher", "fully-supervised"]
