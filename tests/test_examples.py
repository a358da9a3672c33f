"""The shipped example plugins (``examples/``) work through ``--plugin`` exactly as their docstrings say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli_subprocess

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MARGIN = EXAMPLES / "margin_estimator.py"


@pytest.mark.parametrize("method", ["coranet", "ua-mt"])
def test_margin_estimator_plugin_passes_the_contract_check(method):
    proc = run_cli_subprocess("check", "--method", method, "--estimator", "margin", "--plugin", MARGIN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout


def test_margin_estimator_is_listed_with_its_summary():
    proc = run_cli_subprocess("list", "estimators", "--plugin", MARGIN)
    assert proc.returncode == 0, proc.stderr
    assert "margin" in proc.stdout and "Top-two softmax margin" in proc.stdout


def test_margin_estimator_semantics():
    """Certain exactly where the top-two gap reaches min_margin; bad options are refused."""
    script = f"""
import torch
from ssl_bench.core.registry import load_plugin_file
from ssl_bench.core.uncertainty import build_estimator
load_plugin_file({str(MARGIN)!r})
est = build_estimator("margin", {{"min_margin": 0.5}}, 3)
logits = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.2, 0.05, 0.75]]))[:, :, None, None]
umap = est.estimate(torch.nn.Identity(), logits)
assert umap.certain.flatten().tolist() == [True, False, True], umap.certain
assert umap.pseudo_label.flatten().tolist() == [0, 0, 2]
try:
    build_estimator("margin", {{"min_margin": 2.0}}, 3)
except ValueError as e:
    assert "min_margin" in str(e)
else:
    raise AssertionError("min_margin=2 accepted")
try:
    build_estimator("margin", {{"bn": "frozen"}}, 3)
except ValueError as e:
    assert "bn must be" in str(e)
else:
    raise AssertionError("bn='frozen' accepted")
# a teacher in train mode: the pass leaves its BatchNorm running statistics and its mode alone
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3)).train()
before = net[1].running_mean.clone(), net[1].num_batches_tracked.clone()
for bn in ("keep", "batch", "running"):
    umap = build_estimator("margin", {{"bn": bn}}, 3).estimate(net, 3 + torch.randn(2, 1, 4, 4))
    assert umap.prob.shape == (2, 3, 4, 4) and net.training
    assert torch.equal(net[1].running_mean, before[0]) and torch.equal(net[1].num_batches_tracked, before[1]), bn
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_margin_estimator_trains_ua_mt_and_the_run_keeps_the_plugin(tmp_path):
    proc = run_cli_subprocess(
        "run", "--method", "ua-mt", "--estimator", "margin", "--plugin", MARGIN, "--dataset", "cardiac-phantom",
        "--preset", "smoke", "--set", "params.estimator_options.min_margin=0.5", "--out", tmp_path, "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = next(tmp_path.rglob("manifest.json")).parent
    (kept,) = (run / "plugins").glob("*-margin_estimator.py")  # <sha256 prefix>-<name>
    assert kept.read_text() == MARGIN.read_text()
    assert (run / "eval" / "test" / "summary.json").exists()
