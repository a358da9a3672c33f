"""``ssl-bench estimators compare`` / ``table``, the ``estimator-reference`` model and ``check --estimator`` alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARGIN = ROOT / "examples" / "margin_estimator.py"
FAST = ["--set", "mc-dropout.T=4", "--set", "tta.T=3", "--set", "entropy.T=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke estimator-reference run and a smoke unet run on the phantom."""
    from ssl_bench.cli.main import main

    base = tmp_path_factory.mktemp("estimator_runs")
    cache = os.environ.get("SSL_BENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_BENCH_CACHE", cache)
        for method in ("estimator-reference", "unet"):
            args = ["run", "--method", method, "--preset", "smoke", "--out", str(base), "--no-progress"]
            assert main(args) == 0
            out[method] = next(p.parent for p in base.glob(f"cardiac-phantom/{method}/*/seed0/*/manifest.json"))
    return out


def test_reference_model_carries_every_head(runs):
    import torch

    from ssl_bench.reporting.figures import _load_model
    from ssl_bench.reporting.results import _read_run
    from ssl_bench.training.consistency import has_dropout

    run = runs["estimator-reference"]
    _, _, method = _load_model(_read_run(run, run.parent))
    net = method.inference_module()
    assert sorted(net.extra_heads) == ["con", "logvar", "rad"] and has_dropout(net)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r.get("type") == "train"]
    assert {"sup/ce", "sup/ce_con", "sup/ce_rad", "sup/head_aleatoric"} <= set(train[0])
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert any(k.startswith("student.extra_heads.logvar") for k in state)


def test_compare_writes_records_table_figures(cli, capsys, runs, tmp_path):
    out = tmp_path / "cmp"
    run = runs["estimator-reference"]
    args = ["estimators", "compare", run, "--plugin", MARGIN, "--add", "margin", "--out", out, *FAST]
    assert cli(*args) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "records" / f"{run.name}-val.json").read_text())
    names = ["crm", "softmax-threshold", "entropy", "mc-dropout", "tta", "aleatoric", "none", "margin"]
    assert sorted(record["estimators"]) == sorted(names)
    assert record["split"] == "val" and record["n_slices"] > 0 and record["run"]["method"] == "estimator-reference"
    est = record["estimators"]
    # cost: passes per slice as configured (MC dropout's T = 4 batched, TTA's 3, one for single-pass estimators)
    assert est["mc-dropout"]["cost"]["passes_per_slice"] == 4
    assert est["tta"]["cost"]["passes_per_slice"] == 3
    assert est["margin"]["cost"]["passes_per_slice"] == 1 and est["margin"]["cost"]["ms_per_slice"] > 0
    for e in est.values():
        m = e["metrics"]
        assert set(m) >= {"all", "pred_1", "pred_2", "pred_3", "class_1", "class_2", "class_3"}
        assert 0 <= m["all"]["certain_fraction"] <= 1 and m["all"]["pixels"] == record["n_slices"] * 32 * 32
        assert m["all"]["aurc"] >= m["all"]["aurc_optimal"] - 1e-9
    assert est["none"]["metrics"]["all"]["certain_fraction"] == 1.0 and est["none"]["metrics"]["score_is_mask"]
    # every row of the table, and all three formats and figures
    for name in names:
        assert f"| {name} |" in printed
    for suffix in (".md", ".tex", ".csv", "-risk-coverage.png", "-reliability.pdf", "-pl-quality.png"):
        assert (out / f"estimators-val{suffix}").stat().st_size > 0
    # re-rendered from the records alone
    assert cli("estimators", "table", out / "records", "--format", "csv") == 0
    csv = capsys.readouterr().out
    assert csv.startswith("estimator,group,metric,mean,std,n") and "margin,all,auroc" in csv


def test_compare_is_deterministic_and_splits(runs):
    from ssl_bench.reporting.estimator_compare import compare_run, parse_estimators

    requests = parse_estimators(["mc-dropout", "tta"], {"mc-dropout.T": 3, "tta.T": 2})
    a = compare_run(runs["estimator-reference"], requests, echo=lambda s: None)
    b = compare_run(runs["estimator-reference"], requests, echo=lambda s: None)
    for name in ("mc-dropout", "tta"):
        same = json.dumps(a["estimators"][name]["metrics"]) == json.dumps(b["estimators"][name]["metrics"])
        assert same, name  # (NaN-safe comparison)
    u = compare_run(runs["estimator-reference"], requests[:1], split="unlabelled", echo=lambda s: None)
    assert u["split"] == "unlabelled" and set(u["cases"]).isdisjoint(a["cases"])


def test_missing_head_names_head_and_option(cli, capsys, runs, tmp_path):
    code = cli("estimators", "compare", runs["unet"], "--estimators", "softmax-threshold,aleatoric", "--out", tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'logvar'" in err and "--method estimator-reference" in err
    assert not (tmp_path / "records").exists()  # refused before any work
    assert cli("estimators", "compare", runs["unet"], "--estimators", "mc-dropout", "--out", tmp_path) == 2
    assert "dropout" in capsys.readouterr().err
    assert cli("estimators", "compare", runs["unet"], "--estimators", "nope") == 2
    assert cli("estimators", "compare", runs["unet"], "--set", "tta.T=2", "--estimators", "crm") == 2
    assert "ESTIMATOR.OPTION" in capsys.readouterr().err


def test_check_estimator_alone(cli, capsys):
    for name in ("crm", "aleatoric", "mc-dropout"):
        assert cli("check", "--estimator", name, "--dims", "2") == 0, name
    out = capsys.readouterr().out
    assert "BatchNorm statistics untouched[train]" in out and "deterministic under a seed[eval]" in out
    assert cli("check", "--estimator", "margin", "--plugin", MARGIN) == 0
    assert cli("check") == 2 and "--estimator" in capsys.readouterr().err


BROKEN = '''
import torch
from ssl_bench import ESTIMATORS, UncertaintyEstimator, UncertaintyMap


@ESTIMATORS.register("leaky-bn-{tag}")
class Leaky(UncertaintyEstimator):
    """Runs the net as it is (train mode updates BatchNorm) and draws noise without a seed."""

    def estimate(self, net, x, step=None):
        prob = net(x).softmax(1)  # gradient kept, BatchNorm statistics updated in train mode
        return UncertaintyMap(prob=prob, certain=torch.rand(prob[:, 0].shape) > 0.5, score=None)
'''


def test_check_estimator_catches_a_broken_plugin(tmp_path):
    from ssl_bench.core.registry import load_plugin_file
    from ssl_bench.training.check_estimator import check_estimator

    path = tmp_path / "leaky.py"
    path.write_text(BROKEN.replace("{tag}", tmp_path.name[-8:]))
    load_plugin_file(path)
    results = {r.name: r.ok for r in check_estimator(f"leaky-bn-{tmp_path.name[-8:]}", dims=(2,))}
    assert results["no gradient[eval]"] is False
    assert results["BatchNorm statistics untouched[train]"] is False
    assert results["shapes[eval]"] is True


def test_crm_estimate_leaves_batchnorm_statistics_untouched():
    """CRM's passes in a train-mode net used to update BatchNorm running statistics (failed before the fix)."""
    import torch

    from ssl_bench.core.registry import BACKBONES
    from ssl_bench.core.uncertainty import build_estimator

    est = build_estimator("crm", {}, 3)
    net = BACKBONES.get("unet2d")(1, 3, width=4, depth=2, extra_heads=tuple(est.required_heads()), main_head="branch")
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    est.estimate(net, torch.randn(2, 1, 16, 16))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mc_dropout_shared_encoder_equals_full_passes(mode):
    """Sampling only the decoder's dropout gives the full passes' result under the same seed."""
    import torch

    from ssl_bench.core.registry import BACKBONES
    from ssl_bench.core.uncertainty import build_estimator

    net = BACKBONES.get("unet2d")(1, 4, width=4, depth=2, dropout=0.5)
    net.train(mode == "train")
    x = torch.randn(3, 1, 16, 16)
    shared = build_estimator("mc-dropout", {"T": 6, "per_forward": 4}, 4)
    full = build_estimator("mc-dropout", {"T": 6, "per_forward": 4, "share_encoder": False}, 4)
    torch.manual_seed(0)
    a = shared.estimate(net, x).prob
    torch.manual_seed(0)
    b = full.estimate(net, x).prob
    assert torch.allclose(a, b, atol=1e-5)
    torch.manual_seed(1)
    assert not torch.allclose(shared.estimate(net, x).prob, a)  # the passes are random


def test_compare_batches_passes_to_the_device():
    from ssl_bench.reporting.estimator_compare import EstimatorRequest, batched_options

    assert batched_options(EstimatorRequest("mc-dropout"), 16, 16) == {"per_forward": 1}
    assert batched_options(EstimatorRequest("entropy"), 4, 256) == {"per_forward": 64}
    assert batched_options(EstimatorRequest("mc-dropout", {"per_forward": 3}), 16, 256) == {"per_forward": 3}
    assert batched_options(EstimatorRequest("tta"), 16, 16) == {}
