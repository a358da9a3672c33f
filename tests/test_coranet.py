"""CoraNet maths: Eq. 1 costs, Eq. 5-6 masks, multi-class voting (reduces to binary for K = 2), offline
pseudo-labels in the batch frame, released-code loss composition, ablation regions, parameter counts."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.method import Batch, EpochData, MethodContext, StepInfo
from ssl_bench.core.registry import ESTIMATORS, METHODS
from ssl_bench.core.uncertainty import UncertaintyMap
from ssl_bench.methods.coranet import (
    ConservativeRadicalDisagreement,
    CoraNet,
    CoraNetConfig,
    subtask_logits,
    vote,
)
from ssl_bench.nets.unet import unet2d
from ssl_bench.training.augment import apply_augment


def make(num_classes=2, **cfg):
    spec = TaskSpec(dims=2, num_classes=num_classes, label_names=tuple(f"c{i}" for i in range(num_classes)))
    factory = functools.partial(unet2d, 1, num_classes, width=4, depth=2)
    torch.manual_seed(0)
    return CoraNet(CoraNetConfig(**cfg), MethodContext(spec=spec, backbone_factory=factory, epochs=40))


def step_info(stage="self-train", stage_step=0):
    return StepInfo(
        step=0, epoch=0, stage=stage, stage_step=stage_step, stage_steps=10, total_steps=10, steps_per_epoch=2
    )


def test_vote_is_binary_argmax_for_two_classes():
    logits = torch.randn(3, 2, 5, 5)
    assert torch.equal(vote(logits), logits.argmax(1))


def test_vote_multiclass_picks_the_most_confident_foreground():
    # two sub-tasks (K = 3); foreground probabilities p1, p2 per pixel via logit pairs (0, log-odds)
    def pair(p):
        return torch.tensor([0.0, torch.logit(torch.tensor(p)).item()])

    cases = [((0.2, 0.3), 0), ((0.7, 0.3), 1), ((0.7, 0.9), 2), ((0.6, 0.55), 1)]
    logits = torch.stack([torch.cat([pair(a), pair(b)]) for (a, b), _ in cases])[:, :, None, None]
    assert vote(logits).flatten().tolist() == [expected for _, expected in cases]


def test_crm_mask_is_xor_of_con_and_rad_for_binary():
    net = unet2d(1, 2, width=4, depth=2, extra_heads=ConservativeRadicalDisagreement(None, 2).required_heads())
    net.eval()
    x = torch.randn(2, 1, 16, 16)
    umap = ConservativeRadicalDisagreement(None, 2).estimate(net, x)
    heads = net.forward_heads(x)
    xor = heads["con"].argmax(1) ^ heads["rad"].argmax(1)  # Eq. 5
    assert torch.equal(~umap.certain, xor.bool())  # Eq. 6
    assert torch.equal(umap.pseudo_label, heads["main"].argmax(1))  # Eq. 2


def test_cost_sensitive_ce_matches_eq1():
    method = make(alpha=5.0)
    heads = {"con": torch.randn(2, 2, 8, 8), "rad": torch.randn(2, 2, 8, 8)}
    y = torch.randint(0, 2, (2, 8, 8))
    out = method._cost_sensitive(heads, y, method.w_con, method.w_rad, None, "pixels")
    # Eq. 1: - sum_k sum_z w_k q_zk log p_zk, divided by the pixel count; w_con = [alpha, 1], w_rad = [1, alpha]
    logp = heads["con"].log_softmax(1)
    w = torch.where(y == 0, 5.0, 1.0)
    expected = -(w * logp.gather(1, y[:, None])[:, 0]).mean()
    assert out["con"].item() == pytest.approx(expected.item(), rel=1e-6)
    w_rad = torch.where(y == 1, 5.0, 1.0)
    expected_rad = -(w_rad * heads["rad"].log_softmax(1).gather(1, y[:, None])[:, 0]).mean()
    assert out["rad"].item() == pytest.approx(expected_rad.item(), rel=1e-6)


def test_multiclass_reduces_to_binary_for_two_classes():
    """K = 2: one sub-task whose targets are the labels themselves, the vote is the arg-max."""
    method = make(num_classes=2)
    heads = {"con": torch.randn(2, 2, 8, 8), "rad": torch.randn(2, 2, 8, 8)}
    y = torch.randint(0, 2, (2, 8, 8))
    assert subtask_logits(heads["con"]).shape == (2, 1, 2, 8, 8)
    out = method._cost_sensitive(heads, y, method.w_con, method.w_rad, None, "pixels")
    direct = (F.cross_entropy(heads["con"], y, reduction="none") * method.w_con[y]).mean()
    assert out["con"].item() == pytest.approx(direct.item(), rel=1e-6)


def test_paper_step_losses_and_regions():
    method = make(num_classes=3)
    x_l, y_l = torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    x_u = torch.randn(2, 1, 16, 16)
    out = method.training_step(Batch(x_l, y_l, torch.arange(2)), Batch(x_u, None, torch.arange(2)), step_info())
    assert {"sup/ce", "sup/ce_con", "sup/ce_rad", "unsup/c_sn", "unsup/uc_sn", "mask/certain_frac"} <= set(out)
    sup = out["sup/ce"] + out["sup/ce_con"] + out["sup/ce_rad"]  # Eq. 1
    assert out["loss"].item() == pytest.approx((sup + out["unsup/c_sn"] + out["unsup/uc_sn"]).item(), rel=1e-5)
    pre = method.training_step(Batch(x_l, y_l, torch.arange(2)), None, step_info("pretrain"))
    assert not [k for k in pre if k.startswith("unsup/")]


@pytest.mark.parametrize(
    ("name", "terms"),
    [
        ("coranet-seg", set()),
        ("coranet-seg-st", {"unsup/c_sn"}),
        ("coranet-seg-st-mask", {"unsup/c_sn"}),
        ("coranet-seg-mt", {"unsup/uc_sn"}),
        ("coranet-seg-mt-mask", {"unsup/uc_sn"}),
        ("coranet", {"unsup/c_sn", "unsup/uc_sn"}),
    ],
)
def test_ablations_are_configurations(name, terms):
    cls = METHODS.get(name)
    assert issubclass(cls, CoraNet)
    spec = TaskSpec(dims=2, num_classes=2, label_names=("bg", "fg"))
    method = cls(cls.Config(), MethodContext(spec, functools.partial(unet2d, 1, 2, width=4, depth=2), 40))
    x = torch.randn(2, 1, 16, 16)
    batch_u = Batch(x, None, torch.arange(2)) if cls.uses_unlabeled else None
    out = method.training_step(Batch(x, torch.randint(0, 2, (2, 16, 16)), torch.arange(2)), batch_u, step_info())
    assert {k for k in out if k.startswith("unsup/")} == terms
    assert (method.teacher is not None) == ("unsup/uc_sn" in terms)


def test_refresh_logs_the_certain_share_of_each_pseudo_labelled_class():
    # what C-SN trains on: class 1 has 4 pseudo-labelled pixels, 1 of them certain; class 2 none; class 3 all certain
    method = make(num_classes=4, pseudo_labels="offline", pretrain_epochs=1)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, :] = 1
    labels[0, 3, :2] = 3
    certain = torch.ones(1, 4, 4, dtype=torch.bool)
    certain[0, 0, 1:] = False
    method._estimate = lambda x, step: UncertaintyMap(F.one_hot(labels, 4).permute(0, 3, 1, 2).float(), certain)

    def iterate(bs):
        yield Batch(torch.zeros(1, 1, 4, 4), None, torch.arange(1))

    logs = method.refresh(EpochData(iterate, 1, torch.device("cpu")))
    assert logs["pl/certain_share_1"] == 0.25 and logs["pl/certain_share_3"] == 1.0
    assert math.isnan(logs["pl/certain_share_2"]) and logs["pl/certain_frac"] == 13 / 16


def test_offline_pseudo_labels_follow_the_batch_augmentation():
    method = make(num_classes=2, pseudo_labels="offline", pretrain_epochs=1)
    images = torch.randn(3, 1, 16, 16)

    def iterate(bs):
        yield Batch(images, None, torch.arange(3))

    hidden = torch.randint(0, 2, (3, 16, 16), dtype=torch.uint8)
    logs = method.on_epoch_end(0, method.stages()[0], EpochData(iterate, 3, torch.device("cpu"), hidden))
    assert logs is not None and "pl/certain_frac" in logs and "pl/certain/csi_1" in logs
    assert method._pl.shape == (3, 16, 16) and method._certain.dtype == torch.bool
    aug = torch.tensor([[1, 1], [2, 0]])
    idx = torch.tensor([2, 0])
    pl, cert = method._pseudo_labels(Batch(images[idx], None, idx, aug), step_info())
    assert torch.equal(pl, apply_augment(method._pl[idx], aug).long())
    assert torch.equal(cert, apply_augment(method._certain[idx], aug))
    # refresh cadence: every refresh_every self-training epochs
    method.cfg.refresh_every = 2
    stage = method.stages()[1]
    assert method.on_epoch_end(1, stage, EpochData(iterate, 3, torch.device("cpu"))) is None
    assert method.on_epoch_end(2, stage, EpochData(iterate, 3, torch.device("cpu"))) is not None
    # the last epoch (ctx.epochs = 40) refreshes nothing, although its turn is due: no step would use the masks
    method.cfg.refresh_every = 3
    assert (39 + 1 - method.pretrain_epochs) % 3 == 0
    assert method.on_epoch_end(39, stage, EpochData(iterate, 3, torch.device("cpu"))) is None
    assert method.on_epoch_end(36, stage, EpochData(iterate, 3, torch.device("cpu"))) is not None


def test_released_code_protocol_composition():
    method = make(num_classes=2, protocol="released-code", pseudo_labels="online")
    assert method.teacher is not None and not method.teacher.warmup
    x_l, y_l = torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16))
    x_u = torch.randn(2, 1, 16, 16)
    info = step_info(stage_step=2 * 40)  # self-training epoch 40: ramp complete
    out = method.training_step(Batch(x_l, y_l, torch.arange(2)), Batch(x_u, None, torch.arange(2)), info)
    l_sup = (out["sup/ce"] + out["sup/dice"] + out["sup/ce_con"] + out["sup/ce_rad"]) / 4
    assert out["sup/total"].item() == pytest.approx(l_sup.item(), rel=1e-6)
    assert out["weight/unc"].item() == pytest.approx(0.1)
    expected = l_sup + 0.5 * (out["unsup/cert"] + 0.1 * out["unsup/unc"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_released_code_swaps_costs_on_unlabelled_data():
    method = make(num_classes=2, protocol="released-code")
    heads = {"main": torch.randn(1, 2, 4, 4), "con": torch.randn(1, 2, 4, 4), "rad": torch.randn(1, 2, 4, 4)}
    pseudo = torch.randint(0, 2, (1, 4, 4))
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    swapped = method._cost_sensitive(heads, pseudo, method.w_rad, method.w_con, mask, "mask")
    con_with_rad_costs = (F.cross_entropy(heads["con"], pseudo, reduction="none") * method.w_rad[pseudo]).mean()
    assert swapped["con"].item() == pytest.approx(con_with_rad_costs.item(), rel=1e-6)


def test_parameter_counts_exclude_con_rad_heads_at_inference():
    method = make(num_classes=2)
    counts = method.parameter_counts()
    heads = sum(p.numel() for p in method.student.extra_heads.parameters())
    assert counts["train"] - counts["inference"] == heads > 0


def test_crm_estimator_builds_con_rad_heads():
    method = make(num_classes=2, estimator="crm")
    assert set(method.student.extra_heads) == {"con", "rad"}


def test_crm_alpha1_uses_equal_costs_and_differently_initialised_heads():
    method = make(num_classes=2, estimator="crm-alpha1", alpha=5.0)
    assert method.w_con.tolist() == method.w_rad.tolist() == [1.0, 1.0]
    con, rad = method.student.extra_heads["con"], method.student.extra_heads["rad"]
    assert not torch.equal(con[-1].weight, rad[-1].weight)


@pytest.mark.parametrize(
    ("field", "value"),
    [("protocol", "code"), ("st_region", "most"), ("mt_region", "x"), ("pseudo_labels", "sometimes")],
)
def test_bad_options(field, value):
    with pytest.raises(ValueError, match=f"params.{field} must be one of"):
        make(**{field: value})


@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_coranet_contract_with_every_estimator(estimator):
    from ssl_bench.training.check import check_method

    # MC dropout's mean softmax over 50 passes of the 4-channel test net stays below the 0.8 threshold for many
    # steps (with one thread: for all 30 tries), which would leave C-SN nothing to train on
    params = {"estimator_options": {"threshold": 0.5}} if estimator == "mc-dropout" else None
    results = check_method("coranet", estimator=estimator, dims=(2,), params=params)
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed


def test_none_estimator_leaves_uc_sn_nothing_and_builds_no_teacher():
    method = make(num_classes=2, estimator="none")
    assert method.mt_region == "none" and method.teacher is None


def _ambiguous_batch(g: torch.Generator, n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-independent toy problem with irreducible label noise: x ~ N(0, 1), P(fg | x) = sigmoid(3x)."""
    x = torch.randn(n, 1, size, size, generator=g)
    y = (torch.rand(n, size, size, generator=g) < torch.sigmoid(3 * x[:, 0])).long()
    return x, y


def test_eq1_costs_make_the_conservative_head_predict_less_foreground_than_the_radical_one():
    """Trained with L_crm (alpha = 5) on ambiguous pixels, the Bayes decisions are fg where P(fg | x) > 5/6 (con),
    > 1/2 (main) and > 1/6 (rad): about 30 %, 50 % and 70 % of the pixels. The trained heads must order the same."""
    method = make(num_classes=2, alpha=5.0)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(method.student.parameters(), lr=1e-2)
    for i in range(150):
        x, y = _ambiguous_batch(g)
        loss = method.training_step(Batch(x, y, torch.arange(len(x))), None, step_info("pretrain", i))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    method.student.eval()
    x, _ = _ambiguous_batch(g, n=16)
    with torch.no_grad():
        heads = method.student.forward_heads(x, ["con", "rad"])
    fg = {name: float(vote(heads[name]).float().mean()) for name in ("con", "main", "rad")}
    assert fg["con"] < fg["main"] < fg["rad"], fg
    assert fg["rad"] - fg["con"] > 0.2, fg
    # the conservative foreground is (almost) inside the radical one: their disagreement is the uncertain band
    con_fg, rad_fg = vote(heads["con"]) == 1, vote(heads["rad"]) == 1
    assert float((con_fg & ~rad_fg).float().mean()) < 0.02


def test_pretrain_fraction_sets_the_stage_lengths():
    method = make(num_classes=2, pretrain_fraction=0.4)  # trainer.epochs = 40
    assert method.pretrain_epochs == 16
    assert [(s.name, s.epochs, s.unlabeled) for s in method.stages()] == [
        ("pretrain", 16, False),
        ("self-train", 24, True),
    ]
    with pytest.raises(ValueError, match="pretrain_fraction must be in"):
        make(pretrain_fraction=1.0)


def test_cpu_preset_pretrains_ten_of_acdcs_twenty_five_epochs():
    from types import SimpleNamespace

    from ssl_bench.core.registry import DATASETS
    from ssl_bench.training.runner import build_method, resolve_config

    cfg = resolve_config("coranet", "acdc", preset="cpu")
    method = build_method(cfg, SimpleNamespace(spec=DATASETS.get("acdc").spec))
    assert [(s.name, s.epochs) for s in method.stages()] == [("pretrain", 10), ("self-train", 15)]
    assert cfg.params.refresh_every == 2


def test_recipe_loss_replaces_the_main_heads_ce_of_eq1():
    """params.loss=ce+dice-ssl4mis: L_crm = 0.5 (CE + squared Dice)(D) + CE_con + CE_rad; "ce" is Eq. 1 itself."""
    from ssl_bench.training.losses import soft_dice_loss

    x_l, y_l = torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    recipe, paper = make(num_classes=3, loss="ce+dice-ssl4mis"), make(num_classes=3)
    heads = recipe.student.forward_heads(x_l)
    out = recipe._labelled_losses(heads, y_l)
    main = 0.5 * (F.cross_entropy(heads["main"], y_l) + soft_dice_loss(heads["main"], y_l, squared=True))
    assert out["sup/total"].item() == pytest.approx((main + out["sup/ce_con"] + out["sup/ce_rad"]).item(), rel=1e-6)
    eq1 = paper._labelled_losses(heads, y_l)
    assert "sup/dice" not in eq1
    assert eq1["sup/total"].item() == pytest.approx(
        (F.cross_entropy(heads["main"], y_l) + eq1["sup/ce_con"] + eq1["sup/ce_rad"]).item(), rel=1e-6
    )


def test_recipe_presets_give_coranet_the_recipes_supervised_loss_and_the_paper_keeps_eq1():
    from ssl_bench.training.runner import resolve_config

    for preset, want in (
        ("cpu-bench", "ce+dice-ssl4mis"),
        ("ssl4mis", "ce+dice-ssl4mis"),
        ("paper", "ce"),
        ("released", "ce"),
    ):
        params = resolve_config("coranet", "acdc", preset=preset).params
        assert (params.loss, params.st_loss) == (want, want), preset


def test_recipe_st_loss_is_ce_plus_dice_on_the_certain_pixels_of_eq7():
    from ssl_bench.training.losses import soft_dice_loss, weighted_cross_entropy

    method = make(num_classes=3, st_loss="ce+dice-ssl4mis", mt_region="none", pseudo_labels="online")
    x_l, y_l = torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    x_u = torch.randn(2, 1, 16, 16)
    out = method.training_step(Batch(x_l, y_l, torch.arange(2)), Batch(x_u, None, torch.arange(2)), step_info())
    pseudo, certain = method._pseudo_labels(Batch(x_u, None, torch.arange(2)), step_info())
    main = method.student.forward_heads(x_u, [])["main"]
    ce = weighted_cross_entropy(main, pseudo, mask=certain, normalize="pixels")  # Eq. 7
    dice = soft_dice_loss(main, pseudo, squared=True, mask=certain)
    assert out["unsup/c_sn"].item() == pytest.approx((0.5 * (ce + dice)).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["loss", "st_loss"])
def test_released_code_protocol_rejects_a_recipe_loss(name):
    with pytest.raises(ValueError, match=f"params.{name}=ce with params.protocol=released-code"):
        make(protocol="released-code", **{name: "ce+dice-ssl4mis"})
    with pytest.raises(ValueError, match=f"params.{name} must be one of"):
        make(**{name: "dice"})
