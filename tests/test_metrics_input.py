"""Issue #18, `ssl-bench metrics`: NaN input is a one-line error naming the file; an empty reference in one case is
scored by the README's empty-mask rule instead of aborting every case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssl_bench.core.errors import MetricInputError
from ssl_bench.evaluation.metrics_io import score_paths


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def test_nan_in_a_label_map_is_a_one_line_error(tmp_path, cli, capsys):
    ref = np.zeros((3, 8, 8), np.uint8)
    ref[1, 2:5, 2:5] = 1
    pred = ref.astype(np.float32)
    pred[0, 0, 0] = np.nan
    _save(tmp_path / "p.npy", pred)
    _save(tmp_path / "r.npy", ref)
    with pytest.raises(MetricInputError, match="NaN"):
        score_paths(tmp_path / "p.npy", tmp_path / "r.npy", None)
    assert cli("metrics", tmp_path / "p.npy", tmp_path / "r.npy") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "p.npy" in err and "\n" not in err


def test_empty_reference_in_one_case_follows_the_empty_mask_rule(tmp_path, cli, capsys):
    full = np.zeros((3, 8, 8), np.uint8)
    full[1, 2:5, 2:5] = 1
    full[2, 1:3, 1:3] = 2
    empty = np.zeros_like(full)
    spill = empty.copy()
    spill[0, 0:2, 0:2] = 1  # predicted class 1 where the reference is empty
    for name, ref, pred in (("a", full, full), ("b", empty, spill), ("c", empty, empty)):
        _save(tmp_path / "ref" / f"{name}.npy", ref)
        _save(tmp_path / "pred" / f"{name}.npy", pred)
    rows = {(r["case"], r["class"]): r for r in score_paths(tmp_path / "pred", tmp_path / "ref", None)}
    assert set(rows) == {(c, k) for c in "abc" for k in (1, 2)}
    assert rows["a", 1]["dice"] == 1.0
    assert rows["b", 1]["dice"] == 0.0 and rows["b", 1]["precision"] == 0.0 and math.isnan(rows["b", 1]["hd95"])
    assert all(math.isnan(rows["c", k]["dice"]) for k in (1, 2))  # both empty: NaN, excluded from means
    assert cli("metrics", tmp_path / "pred", tmp_path / "ref") == 0
    assert "3 case(s)" in capsys.readouterr().out
