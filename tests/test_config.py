"""Typed config: presets, --set overrides, errors, YAML round trip, hashing."""

from __future__ import annotations

import pytest

from ssl_bench.core.config import RunConfig, apply_overrides, config_hash, dump_yaml, load_run_config, parse_set
from ssl_bench.core.errors import ConfigError
from ssl_bench.methods.supervised import SupervisedConfig
from ssl_bench.training.runner import resolve_config


def test_presets_layer_in_order():
    smoke = resolve_config("unet", "cardiac-phantom", preset="smoke")
    assert smoke.trainer.epochs == 2 and smoke.model.width == 8 and smoke.dataset.image_size == (32, 32)
    paper = resolve_config("unet", "cardiac-phantom", preset="paper")
    assert paper.model.width == 64 and paper.optim.betas == (0.5, 0.999) and paper.trainer.batch_size == 4
    assert paper.dataset.image_size == (256, 256)


def test_set_overrides_are_typed():
    cfg = resolve_config(
        "unet",
        "cardiac-phantom",
        preset="smoke",
        overrides=parse_set(
            [
                "trainer.epochs=5",
                "optim.lr=3e-4",
                "dataset.image_size=64",
                "optim.grad_clip=none",
                "trainer.amp=false",
                "optim.betas=[0.9, 0.99]",
                "params.loss=ce+dice",
            ]
        ),
    )
    assert cfg.trainer.epochs == 5 and isinstance(cfg.trainer.epochs, int)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.dataset.image_size == (64, 64)
    assert cfg.optim.grad_clip is None and cfg.trainer.amp is False
    assert cfg.optim.betas == (0.9, 0.99)
    assert cfg.params.loss == "ce+dice"


def test_method_name_aliases_address_params():
    cfg = resolve_config("unet", "cardiac-phantom", overrides={"unet.loss": "ce+dice"})
    assert cfg.params.loss == "ce+dice"
    cfg = resolve_config("unet", "cardiac-phantom", overrides={"method.loss": "ce+dice"})
    assert cfg.params.loss == "ce+dice"


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        ("trainer.epoch=3", r"unknown config key 'trainer.epoch'. Did you mean trainer.epochs"),
        ("trainer.epochs=three", r"trainer.epochs: expected an integer, got 'three'"),
        ("trainer.epochs=2.5", r"expected an integer"),
        ("trainer.amp=maybe", r"expected true/false"),
        ("optim.betas=[1, 2, 3]", r"expected 2 values"),
        ("trainer=3", r"is a section"),
        ("params.nope=1", r"unknown config key 'params.nope'"),
        ("optim.name=rmsprop", r"optim.name must be adam, adamw or sgd"),
        ("dataset.image_size=100", r"divisible by 2\*\*model.depth"),
    ],
)
def test_bad_overrides_give_specific_errors(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        resolve_config("unet", "cardiac-phantom", overrides=parse_set([item]))


def test_parse_set_requires_key_value():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["trainer.epochs"])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        resolve_config("unet", "cardiac-phantom", preset="fast")


def test_yaml_round_trip_and_hash(tmp_path):
    cfg = resolve_config("unet", "cardiac-phantom", preset="smoke", seed=3, labeled=4)
    dump_yaml(cfg, tmp_path / "config.yaml")
    back = load_run_config(tmp_path / "config.yaml", SupervisedConfig)
    assert back == cfg
    assert config_hash(back) == config_hash(cfg)
    other = apply_overrides(cfg, {"seed": 4})
    assert config_hash(other) != config_hash(cfg)
    rooted = apply_overrides(cfg, {"dataset.root": "/somewhere"})
    assert config_hash(rooted) == config_hash(cfg)  # the data location does not change results


def test_config_file_layer(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  epochs: 7\nparams:\n  loss: ce+dice\n")
    cfg = resolve_config("unet", "cardiac-phantom", config_file=str(path), overrides={"trainer.epochs": "8"})
    assert cfg.trainer.epochs == 8 and cfg.params.loss == "ce+dice"
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        resolve_config("unet", "cardiac-phantom", config_file=str(path))


def test_estimator_flag_rejected_for_methods_without_estimator():
    with pytest.raises(ConfigError, match="does not use an uncertainty estimator"):
        resolve_config("unet", "cardiac-phantom", estimator="entropy")


def test_backbone_dims_checked():
    with pytest.raises(ConfigError, match="backbone 'unet3d' is .*3.*D only"):
        resolve_config("unet", "cardiac-phantom", backbone="unet3d")


def test_default_config_is_valid_dataclass():
    assert RunConfig().method == "unet"


def test_pancreas_ct_3d_paper_preset_reproduces_section_iv_d():
    """§IV-D: V-Net, 12 labelled volumes, 30 pre-training + 200 self-training epochs, stride 16 x 16 x 4."""
    cfg = resolve_config("coranet", "pancreas-ct-3d", preset="paper")
    assert cfg.model.backbone == "vnet" and cfg.dataset.labeled == 12
    assert cfg.params.pretrain_epochs == 30 and cfg.trainer.epochs == 30 + 200  # epochs count both stages
    assert cfg.eval.stride == (4, 16, 16) and cfg.eval.patch_size == (96, 96, 96)
    assert cfg.dataset.patch_size == (96, 96, 96)


def test_offline_pseudo_labels_on_random_3d_crops_rejected():
    with pytest.raises(ConfigError, match="unlabeled_views=center"):
        resolve_config(
            "coranet", "pancreas-phantom-3d", preset="smoke", overrides={"dataset.unlabeled_views": "random"}
        )
    cfg = resolve_config(
        "coranet",
        "pancreas-phantom-3d",
        preset="smoke",
        overrides={"dataset.unlabeled_views": "random", "params.pseudo_labels": "online"},
    )
    assert cfg.params.pseudo_labels == "online"


def test_free_form_options_take_dotted_keys():
    cfg = resolve_config("coranet", "cardiac-phantom", overrides=parse_set(["params.estimator_options.T=4"]))
    assert cfg.params.estimator_options == {"T": 4}
