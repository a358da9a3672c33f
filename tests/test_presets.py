"""The reference recipes as presets: ``ssl4mis`` (HiLab-git/SSL4MIS train_*_2D.py), ``cpu-bench`` (it, shrunk to this
machine), ``released`` (koncle/CoraNet's released schedule); and ``trainer.select=both`` (best-val and last tested)."""

from __future__ import annotations

import json

import pytest

from ssl_bench.core.config import PRESETS
from ssl_bench.training.runner import eval_run, resolve_config, start_run


@pytest.mark.parametrize("method", ["unet", "fully-supervised", "mean-teacher", "ua-mt"])
def test_ssl4mis_preset_is_the_reference_recipe(method):
    """HiLab-git/SSL4MIS code/train_{fully_supervised,mean_teacher,uncertainty_aware_mean_teacher}_2D.py defaults."""
    cfg = resolve_config(method, "acdc", preset="ssl4mis")
    assert cfg.dataset.labeled == 7 and cfg.dataset.selection == "first"  # --labeled_num 7: first 136 slices
    assert cfg.dataset.image_size == (256, 256) and cfg.dataset.augment == "ssl4mis"
    assert cfg.dataset.image_resize == "nearest"  # scipy zoom, order 0, for the image too
    assert (cfg.model.backbone, cfg.model.width, cfg.model.dropout) == ("ssl4mis-unet", 16, 0.0)
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.schedule) == ("sgd", 0.01, 0.9, 1e-4, "poly")
    t = cfg.trainer
    assert t.epochs * t.iters_per_epoch == 30_000 and t.iters_per_epoch == 200 and t.val_every == 1  # val / 200 its
    assert (t.batch_size, t.unlabeled_batch_size) == (12, 12) and t.select == "both"
    assert cfg.params.loss == "ce+dice-ssl4mis"
    if method in ("mean-teacher", "ua-mt"):
        p = cfg.params
        assert p.joint_bn is True  # one student forward over labelled + unlabelled images
        assert (p.weight, p.rampup, p.ramp, p.ramp_levels) == (0.1, 1.0, "sigmoid", 200)  # 0.1 ramp(it // 150, 200)
        assert (p.ema_decay, p.ema_warmup, p.noise_std, p.noise_clip) == (0.99, True, 0.1, 0.2)
        assert p.mute == (pytest.approx(1000 / 30000) if method == "mean-teacher" else 0.0)
    if method == "ua-mt":
        assert cfg.params.estimator_options == {"entropy_max": "ln-2", "rampup": 1.0, "T": 8, "per_forward": 2}
        assert cfg.params.consistency_norm == "ssl4mis"  # channel sum / (2 |mask|)


def test_cpu_bench_is_ssl4mis_shrunk():
    cfg = resolve_config("mean-teacher", "acdc", preset="cpu-bench")
    ref = resolve_config("mean-teacher", "acdc", preset="ssl4mis")
    assert cfg.dataset.image_size == (128, 128)
    assert (cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size) == (4, 4)
    assert cfg.trainer.epochs * cfg.trainer.iters_per_epoch == 4000
    for section in ("model", "optim"):
        assert getattr(cfg, section) == getattr(ref, section)
    assert cfg.params == ref.params  # ramps and mutes are fractions of the run
    assert set(PRESETS["cpu-bench"]) == set(PRESETS["ssl4mis"])


def test_labelled_and_unlabelled_share_one_forward_by_default_as_the_references():
    """Issue #13's BatchNorm rule: every method with the option defaults to its reference's forward (one
    concatenated forward; VAT's reference code has two), under every preset but ``cpu``, whose committed records were
    made with separate forwards."""
    from ssl_bench.core.registry import METHODS

    with_option = [name for name in METHODS.names() if hasattr(METHODS.get(name).Config(), "joint_bn")]
    assert {"mean-teacher", "ua-mt", "cps", "unimatch", "vat"} <= set(with_option)
    for name in with_option:
        default = METHODS.get(name).Config().joint_bn
        assert default is (name != "vat"), name
        assert resolve_config(name, "acdc", preset="paper").params.joint_bn is default, name
        assert resolve_config(name, "acdc", preset="cpu").params.joint_bn is False, name
        assert resolve_config(name, "acdc", preset="cpu-bench").params.joint_bn is True, name


def test_global_preset_params_apply_only_where_the_method_has_the_option():
    cfg = resolve_config("unet", "acdc", preset="ssl4mis")
    assert not hasattr(cfg.params, "joint_bn") and cfg.params.loss == "ce+dice-ssl4mis"


def test_coranet_released_preset_is_the_released_schedule():
    """koncle/CoraNet train_ST_3D_VNet.py: pre-train 60 epochs of 8 steps, self-train epochs 0..200 of 6 steps, refresh
    every 5, batch 8, Adam 1e-3 (0.5, 0.999), no augmentation, no lr schedule, one centre crop per unlabelled volume."""
    from ssl_bench.core.method import MethodContext
    from ssl_bench.training.runner import build_adapter, build_method

    cfg = resolve_config("coranet", "pancreas-phantom-3d", preset="released")
    p = cfg.params
    assert (p.protocol, p.pretrain_epochs, p.pretrain_fraction, p.refresh_every) == ("released-code", 60, None, 5)
    assert (p.pretrain_iters, p.self_train_iters) == (8, 6) and cfg.trainer.epochs == 60 + 201
    assert cfg.dataset.unlabeled_views == "center" and cfg.dataset.augment == "none"
    assert (cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size) == (8, 8)
    o = cfg.optim
    assert (o.name, o.lr, o.betas, o.weight_decay, o.schedule) == ("adam", 1e-3, (0.5, 0.999), 0.0, "constant")
    assert cfg.trainer.select == "last"
    method = build_method(cfg, build_adapter(cfg))
    assert isinstance(method.ctx, MethodContext)
    stages = method.stages()
    assert [(s.name, s.epochs, s.iters_per_epoch) for s in stages] == [("pretrain", 60, 8), ("self-train", 201, 6)]


def test_select_both_tests_best_and_last_and_records_both(tmp_path):
    from ssl_bench.reporting.results import RECORD_FILES, export_records

    cfg = resolve_config(
        "unet", "cardiac-phantom", preset="smoke", overrides={"trainer.select": "both", "trainer.epochs": 3}
    )
    run = start_run(cfg, out=tmp_path / "runs", progress=False, echo=lambda s: None).run_dir
    best = json.loads((run / "eval/test/summary.json").read_text())
    last = json.loads((run / "eval/test-last/summary.json").read_text())
    assert best["checkpoint"].startswith("best-val") and last["checkpoint"].startswith("last")
    assert (run / "eval/test-last/per_case.csv").is_file()
    assert "eval/test-last/summary.json" in RECORD_FILES
    (record,) = export_records([run], tmp_path / "records", root=tmp_path / "runs")
    assert (record / "eval/test-last/summary.json").is_file() and (record / "eval/test/summary.json").is_file()
    # `ssl-bench eval` re-scores both models, to the same numbers
    (run / "eval/test-last/summary.json").unlink()
    eval_run(run, "test", progress=False, echo=lambda s: None)
    again = json.loads((run / "eval/test-last/summary.json").read_text())
    assert again["foreground_mean"]["dice"] == pytest.approx(last["foreground_mean"]["dice"], abs=1e-12)


def test_bad_select_is_refused():
    from ssl_bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.select must be one of"):
        resolve_config("unet", "cardiac-phantom", preset="smoke", overrides={"trainer.select": "best"})


def test_cpu_bench_derives_a_methods_ssl4mis_entry_without_its_run_length():
    from ssl_bench.training.runner import method_preset

    presets = {"ssl4mis": {"params.weight": 0.3, "trainer.epochs": 300, "params.pretrain_epochs": 50}}
    assert method_preset(presets, "cpu-bench") == {"params.weight": 0.3}
    assert method_preset({**presets, "cpu-bench": {"params.weight": 1.0}}, "cpu-bench") == {"params.weight": 1.0}
    assert method_preset(presets, "cpu") == {}
    cfg = resolve_config("mc-net", "acdc", preset="cpu-bench")  # MC-Net's reference: constant lr, Dice only
    assert cfg.optim.schedule == "constant" and cfg.params.dice_only is True
    assert cfg.trainer.epochs * cfg.trainer.iters_per_epoch == 4000


def test_ssl4mis_unet_fixed_layout_is_enforced_before_training():
    from ssl_bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="multiples of 16"):
        resolve_config("unet", "acdc", preset="cpu-bench", overrides={"dataset.image_size": (120, 120)})
    with pytest.raises(ConfigError, match="fixed depth 4"):
        resolve_config("unet", "acdc", preset="cpu-bench", overrides={"model.norm": "instance"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"params.loss": "dice"}, "params.loss must be one of ce, ce[+]dice, ce[+]dice-ssl4mis, ce[+]dice-uamt"),
        ({"params.mute": 1.5}, "0 <= params.mute < 1"),
        ({"params.ramp_levels": -1}, "params.ramp_levels >= 0"),
    ],
)
def test_bad_loss_and_ramp_options_are_refused_before_training(tmp_path, overrides, message):
    from ssl_bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        cfg = resolve_config("mean-teacher", "cardiac-phantom", preset="smoke", overrides=overrides)
        start_run(cfg, out=tmp_path, progress=False, echo=lambda s: None)
    assert not any(tmp_path.rglob("manifest.json"))  # nothing half-written
