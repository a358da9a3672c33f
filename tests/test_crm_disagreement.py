"""benchmarks/crm_disagreement.py on a smoke CoraNet run: its uncertain pixels are the CRM estimator's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from test_results import _run_dirs, smoke_tree  # noqa: F401 - session fixture shared with test_results

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "crm_disagreement.py"


def _script():
    spec = importlib.util.spec_from_file_location("crm_disagreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_match_the_crm_estimator_on_the_validation_split(smoke_tree):  # noqa: F811
    from ssl_bench.core.transforms import resize_images
    from ssl_bench.training.runner import build_adapter, build_method, load_run

    run = _run_dirs(smoke_tree, "coranet")[0]
    out = _script().analyse(run, "last.pt")
    rows = out["classes"]
    # the same model through the estimator the method trains with (eval mode, as its refresh)
    cfg, _ = load_run(run, training=False)
    adapter = build_adapter(cfg)
    method = build_method(cfg, adapter)
    method.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"])
    method.eval()
    n_uncertain = n_pixels = 0
    for case_id in adapter.splits()["val"]:
        image = torch.as_tensor(np.asarray(adapter.load_case(case_id).image, np.float32))[:, None]
        x = resize_images(image, tuple(cfg.dataset.image_size), cfg.dataset.image_resize)
        umap = method.estimator.estimate(method.student, x)
        n_uncertain += int((~umap.certain).sum())
        n_pixels += umap.certain.numel()
    assert len(rows) == adapter.spec.num_classes
    assert sum(r["pixels"] for r in rows) == n_pixels
    assert sum(r["uncertain"] for r in rows) == n_uncertain
    for r in rows:
        assert sum(r["pairs"].values()) == r["uncertain"]
        assert all(con != rad for con, rad in r["pairs"])
        assert r["uncertain"] + r["certain_bg"] <= r["pixels"]
        assert all(0 <= v <= r["pixels"] for v in r["recall"].values())


def test_refuses_a_run_without_the_crm(smoke_tree):  # noqa: F811
    with pytest.raises(ValueError, match="not a CoraNet run"):
        _script().analyse(_run_dirs(smoke_tree, "unet")[0])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _script().analyse(_run_dirs(smoke_tree, "coranet")[0], "nope.pt")
