"""Maths of BCP (copy-paste box, bidirectional mixing, mixed loss, pseudo-label components, stage boundary) and ABD
(patch confidence, patch selection, displacement, strong view), against hand-made inputs and step-by-step
restatements of the reference code (DeepMed-Lab-ECNU/BCP ``code/ACDC_BCP_train.py``, chy-upc/ABD
``code/utils/displacement.py``). The contract check of both methods runs in tests/test_methods.py."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import BACKBONES, METHODS
from ssl_bench.methods.abd import (
    abd_r,
    displace,
    patch_confidence,
    patch_descriptor,
    select_patches,
    strong_view,
    to_patches,
)
from ssl_bench.training.consistency import stochastic_mode
from ssl_bench.training.copy_paste import (
    bidirectional_loss,
    bidirectional_mix,
    box_keep_mask,
    box_side,
    check_pairs,
    largest_component,
    mix,
    mixed_loss,
)

# -- restatements of the reference code (plain loops, no shared helpers) ------------------------------------------


def ref_masked_dice(prob: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCP ``losses.DiceLoss(n_classes)(prob, target[:, None], mask[:, None])``: per class
    1 - (2 sum(p g m) + 1e-10) / (sum(p^2 m) + sum(g^2 m) + 1e-10), summed, divided by the number of classes."""
    k = prob.shape[1]
    loss = 0.0
    for c in range(k):
        g = (target == c).float()
        inter = (prob[:, c] * g * mask).sum()
        y_sum = (g * g * mask).sum()
        z_sum = (prob[:, c] * prob[:, c] * mask).sum()
        loss = loss + 1 - (2 * inter + 1e-10) / (z_sum + y_sum + 1e-10)
    return loss / k


def ref_mix_loss(logits, img_l, patch_l, mask, l_weight=1.0, u_weight=0.5, unlab=False):
    """BCP ``mix_loss``: ``mask`` [B, H, W] is 1 on the image's pixels, 0 on the pasted patch."""
    image_weight, patch_weight = (u_weight, l_weight) if unlab else (l_weight, u_weight)
    prob = logits.softmax(1)
    patch_mask = 1 - mask
    dice = ref_masked_dice(prob, img_l, mask) * image_weight
    dice = dice + ref_masked_dice(prob, patch_l, patch_mask) * patch_weight
    ce_map_img = F.cross_entropy(logits, img_l, reduction="none")
    ce_map_patch = F.cross_entropy(logits, patch_l, reduction="none")
    ce = image_weight * (ce_map_img * mask).sum() / (mask.sum() + 1e-16)
    ce = ce + patch_weight * (ce_map_patch * patch_mask).sum() / (patch_mask.sum() + 1e-16)
    return dice, ce


def ref_kl_sum(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``F.kl_div(log_p, q, reduction='sum')`` written out: sum q (log q - log p)."""
    return (q * (q.log() - log_p)).sum()


# -- fixtures ------------------------------------------------------------------------------------------------------


def make_ctx(dims: int = 2, num_classes: int = 3, epochs: int = 4) -> MethodContext:
    spec = TaskSpec(dims=dims, num_classes=num_classes, label_names=tuple(f"c{i}" for i in range(num_classes)))
    bb = BACKBONES.get("unet2d" if dims == 2 else "unet3d")
    factory = functools.partial(bb, 1, num_classes, width=4, depth=2, norm="batch")
    return MethodContext(spec=spec, backbone_factory=factory, epochs=epochs)


def build(name: str, dims: int = 2, **options):
    cls = METHODS.get(name)
    torch.manual_seed(0)
    return cls(replace(cls.Config(), **options), make_ctx(dims))


def info(stage: str, stage_step: int, step: int = 0) -> StepInfo:
    return StepInfo(
        step=step, epoch=0, stage=stage, stage_step=stage_step, stage_steps=10, total_steps=20, steps_per_epoch=5
    )


def batches(n: int = 4, size: int = 16, k: int = 3, seed: int = 3) -> tuple[Batch, Batch]:
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros((n, size, size), dtype=torch.long)
    y[:, 3:9, 4:10] = 1
    y[:, 9:13, 8:14] = 2
    x_l = y[:, None].float() / k + 0.1 * torch.rand((n, 1, size, size), generator=g)
    x_u = torch.rand((n, 1, size, size), generator=g)
    return Batch(x_l, y, torch.arange(n)), Batch(x_u, None, torch.arange(n))


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


# -- BCP: the box ---------------------------------------------------------------------------------------------------


def test_box_side_is_the_reference_integer_arithmetic():
    assert [box_side(s) for s in range(1, 700)] == [int(s * 2 / 3) for s in range(1, 700)]
    assert box_side(256) == 170 and box_side(96) == 64 and box_side(16) == 10


def box_extent(keep: torch.Tensor) -> tuple[int, int, int, int]:
    """(first row, rows, first column, columns) of the zero box of a 2D mask."""
    rows = torch.nonzero((keep == 0).any(1)).flatten()
    cols = torch.nonzero((keep == 0).any(0)).flatten()
    return int(rows[0]), int(rows[-1] - rows[0] + 1), int(cols[0]), int(cols[-1] - cols[0] + 1)


def test_box_mask_geometry_position_range_and_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        keep = box_keep_mask((256, 256), generator=g)
        assert keep.dtype == torch.float32 and set(keep.unique().tolist()) == {0.0, 1.0}
        r0, nr, c0, nc = box_extent(keep)
        assert (nr, nc) == (170, 170) and int((keep == 0).sum()) == 170 * 170  # one 170 x 170 box, nothing else
        assert 0 <= r0 <= 85 and 0 <= c0 <= 85
    assert float((keep == 0).float().mean()) == pytest.approx((170 / 256) ** 2)
    # np.random.randint(0, 30 - 20): corners 0..9, all reachable, never 10
    starts = [box_extent(box_keep_mask((30, 31), generator=g)) for _ in range(400)]
    assert {(nr, nc) for _, nr, _, nc in starts} == {(20, 20)}
    assert {r0 for r0, *_ in starts} == set(range(10)) and {c0 for *_, c0, _ in starts} == set(range(11))


def test_box_mask_3d_other_ratio_and_determinism():
    keep = box_keep_mask((12, 30, 33), generator=torch.Generator().manual_seed(5))
    box = torch.nonzero(keep == 0)
    assert (box.max(0).values - box.min(0).values + 1).tolist() == [8, 20, 22]
    assert int((keep == 0).sum()) == 8 * 20 * 22
    again = box_keep_mask((12, 30, 33), generator=torch.Generator().manual_seed(5))
    assert torch.equal(keep, again)
    half = box_keep_mask((10, 10), 0.5, generator=torch.Generator().manual_seed(1))
    assert int((half == 0).sum()) == 25
    with pytest.raises(ValueError):
        box_keep_mask((10, 10), 1.5)


# -- BCP: mixing ----------------------------------------------------------------------------------------------------


def test_bidirectional_mix_of_images_and_labels():
    keep = torch.ones(6, 6)
    keep[1:5, 2:6] = 0  # the box
    box = keep == 0

    def const(v: float) -> torch.Tensor:
        return torch.full((2, 1, 6, 6), v)

    into_u, into_l = bidirectional_mix(const(1.0), const(3.0), const(2.0), const(4.0), keep)  # l_a, u_a, l_b, u_b
    assert into_u.shape == (2, 1, 6, 6)
    assert (into_u[:, 0][:, box] == 1).all() and (into_u[:, 0][:, ~box] == 3).all()  # labelled box, unlabelled bg
    assert (into_l[:, 0][:, box] == 4).all() and (into_l[:, 0][:, ~box] == 2).all()  # unlabelled box, labelled bg
    # label maps (ground truth and pseudo-labels) follow the same rule and stay integer
    y_a, p_a = torch.full((2, 6, 6), 1), torch.full((2, 6, 6), 2)
    y_b, p_b = torch.full((2, 6, 6), 3), torch.zeros((2, 6, 6), dtype=torch.long)
    lab_u, lab_l = bidirectional_mix(y_a, p_a, y_b, p_b, keep)
    assert lab_u.dtype == torch.long and lab_l.dtype == torch.long
    assert torch.equal(lab_u, torch.where(box, y_a, p_a)) and torch.equal(lab_l, torch.where(box, p_b, y_b))
    # the reference's arithmetic form a * M + b * (1 - M) for images with several channels
    a, b = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 6, 6)
    assert torch.equal(mix(a, b, keep), a * keep + b * (1 - keep))


def test_check_pairs_rejects_odd_or_unequal_batches():
    check_pairs(12, 12)
    for n_l, n_u in ((3, 3), (1, None), (12, 8)):
        with pytest.raises(ValueError):
            check_pairs(n_l, n_u)


# -- BCP: the mixed loss -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("w_bg", "w_fg"), [(1.0, 1.0), (0.5, 1.0), (1.0, 0.5)])
def test_mixed_loss_equals_reference_mix_loss(w_bg, w_fg):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn((3, 4, 12, 12), generator=g)
    y_bg, y_fg = torch.randint(0, 4, (3, 12, 12), generator=g), torch.randint(0, 4, (3, 12, 12), generator=g)
    y_fg[:, :, :] = y_fg.clamp(max=2)  # a class absent from the box target: Dice term ~1 for it, as the reference
    keep = box_keep_mask((12, 12), generator=g)
    dice, ce = mixed_loss(logits, y_bg, y_fg, keep, w_bg, w_fg)
    loss_mask = keep.expand(3, 12, 12)
    # mix_loss(out, img_l=y_bg, patch_l=y_fg, mask, l_weight, u_weight): image weight = l_weight, patch = u_weight
    ref_dice, ref_ce = ref_mix_loss(logits, y_bg, y_fg, loss_mask, l_weight=w_bg, u_weight=w_fg)
    torch.testing.assert_close(dice, ref_dice, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ce, ref_ce, rtol=1e-5, atol=1e-6)


def test_bidirectional_loss_is_the_reference_self_training_objective():
    g = torch.Generator().manual_seed(2)
    out_u, out_l = torch.randn((2, 4, 10, 10), generator=g), torch.randn((2, 4, 10, 10), generator=g)
    y_a, y_b, p_a, p_b = (torch.randint(0, 4, (2, 10, 10), generator=g) for _ in range(4))
    keep = box_keep_mask((10, 10), generator=g)
    got = bidirectional_loss(out_u, out_l, y_a, y_b, p_a, p_b, keep, 0.5)
    m = keep.expand(2, 10, 10)
    unl_dice, unl_ce = ref_mix_loss(out_u, p_a, y_a, m, u_weight=0.5, unlab=True)
    l_dice, l_ce = ref_mix_loss(out_l, y_b, p_b, m, u_weight=0.5)
    expected = ((unl_dice + l_dice) + (unl_ce + l_ce)) / 2
    torch.testing.assert_close(got["loss"], expected, rtol=1e-5, atol=1e-6)
    # ground-truth and pseudo-label parts: the pseudo-labelled pixels carry the weight u_weight
    full = bidirectional_loss(out_u, out_l, y_a, y_b, p_a, p_b, keep, 1.0)
    torch.testing.assert_close(full["loss"], got["sup/total"] + 0.5 * (got["unsup/dice"] + got["unsup/ce"]))
    only_gt = bidirectional_loss(out_u, out_l, y_a, y_b, p_a, p_b, keep, 0.0)
    torch.testing.assert_close(only_gt["loss"], got["sup/total"])


def test_bcp_steps_are_the_reference_losses_on_the_drawn_box(monkeypatch):
    """The pre-training and self-training steps of the method, with its box fixed, against the reference formulas
    on hand-built mixed images (the student in train mode: its two passes normalise with batch statistics)."""
    method = build("bcp", teacher_mode="eval", largest_cc=False)
    keep = torch.ones(16, 16)
    keep[2:12, 5:15] = 0
    monkeypatch.setattr(method, "box", lambda x, generator: keep)
    bl, bu = batches()
    method.train()
    l_a, l_b, y_a, y_b = bl.image[:2], bl.image[2:], bl.label[:2], bl.label[2:]
    u_a, u_b = bu.image[:2], bu.image[2:]
    m = keep.expand(2, 16, 16)

    pre = method.training_step(bl, None, info("pretrain", 3))
    with torch.no_grad():
        out = method.student(l_a * keep + l_b * (1 - keep))
    d, c = ref_mix_loss(out, y_a, y_b, m, u_weight=1.0, unlab=True)
    torch.testing.assert_close(pre["loss"], (d + c) / 2, rtol=1e-5, atol=1e-6)

    got = method.training_step(bl, bu, info("self-train", 2))
    with torch.no_grad():
        teacher = method.teacher.module
        with stochastic_mode(teacher, dropout=False, bn="running"):
            p_a, p_b = teacher(u_a).argmax(1), teacher(u_b).argmax(1)
        out_unl = method.student(u_a * keep + l_a * (1 - keep))
        out_l = method.student(l_b * keep + u_b * (1 - keep))
    unl_dice, unl_ce = ref_mix_loss(out_unl, p_a, y_a, m, u_weight=0.5, unlab=True)
    l_dice, l_ce = ref_mix_loss(out_l, y_b, p_b, m, u_weight=0.5)
    torch.testing.assert_close(got["loss"], (unl_dice + l_dice + unl_ce + l_ce) / 2, rtol=1e-5, atol=1e-6)


# -- BCP: pseudo-labels --------------------------------------------------------------------------------------------


def test_largest_component_per_class_with_full_connectivity():
    seg = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 1, 0],  # the 1s at (1,3), (2,4), (3,5), (3,4) touch diagonally: one component of 4
            [2, 0, 0, 0, 1, 1],
            [2, 2, 0, 2, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    out = largest_component(torch.stack([seg, torch.zeros_like(seg)]), num_classes=4)
    expected = seg.clone()
    expected[0, 0:2] = 0  # class 1: the 2-pixel blob goes, the diagonal 4-pixel one stays
    expected[4, 3] = 0  # class 2: the isolated pixel goes, the 3-pixel blob stays
    assert torch.equal(out[0], expected)
    assert torch.equal(out[1], torch.zeros_like(seg))  # no component of any class: all background
    assert out.dtype == seg.dtype
    # 3D: 26-connectivity joins corner neighbours
    vol = torch.zeros((1, 4, 4, 4), dtype=torch.long)
    vol[0, 0, 0, 0] = vol[0, 1, 1, 1] = vol[0, 2, 2, 2] = 1
    vol[0, 0, 3, 3] = 1
    out3 = largest_component(vol, 2)
    assert int(out3.sum()) == 3 and int(out3[0, 0, 3, 3]) == 0


def test_pseudo_labels_come_from_the_teacher_with_components():
    method = build("bcp", teacher_mode="eval")
    _, bu = batches()
    with torch.no_grad():
        method.teacher.module.eval()
        raw = method.teacher.module(bu.image).argmax(1)
    pl = method.pseudo_label(bu.image)
    assert torch.equal(pl, largest_component(raw, 3))
    assert torch.equal(build("bcp", teacher_mode="eval", largest_cc=False).pseudo_label(bu.image), raw)


# -- BCP / ABD: stages and the teacher -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bcp", "abd"])
def test_teacher_and_students_equal_the_pretrained_student_at_the_stage_boundary(name):
    method = build(name)
    assert [s.name for s in method.stages()] == ["pretrain", "self-train"]
    assert [s.epochs for s in method.stages()] == [1, 3]  # a quarter of trainer.epochs = 4
    assert not method.stages()[0].unlabeled and method.stages()[1].unlabeled
    bl, bu = batches()
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.5)
    initial_teacher = params(method.teacher.module)
    for k in range(2):  # pre-training moves the student, never the teacher
        out = method.training_step(bl, None, info("pretrain", k, step=k))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_optimizer_step(info("pretrain", k, step=k))
    assert all(torch.equal(a, b) for a, b in zip(initial_teacher, params(method.teacher.module)))
    student = params(method.student)
    student_buffers = [b.clone() for b in method.student.buffers()]
    assert not all(torch.equal(a, b) for a, b in zip(student, initial_teacher))
    first = info("self-train", 0, step=2)
    method.on_stage_start(method.stages()[1], first)  # the trainer's call before a stage's first step
    method.training_step(bl, bu, first)
    assert all(torch.equal(a, b) for a, b in zip(student, params(method.teacher.module)))
    assert all(torch.equal(a, b) for a, b in zip(student_buffers, method.teacher.module.buffers()))
    if name == "abd":
        assert all(torch.equal(a, b) for a, b in zip(student, params(method.student2)))
    # later steps: no reset; the EMA update theta' = 0.99 theta' + 0.01 theta
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    teacher_before = params(method.teacher.module)
    method.training_step(bl, bu, info("self-train", 1, step=3))
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, params(method.teacher.module)))
    method.after_optimizer_step(info("self-train", 1, step=3))
    for t0, s, t1 in zip(teacher_before, method.student.parameters(), method.teacher.module.parameters()):
        torch.testing.assert_close(t1, 0.99 * t0 + 0.01 * s.detach())


def test_bcp_supports_3d_and_abd_is_2d_only():
    method = build("bcp", dims=3)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (2, 12, 12, 12), generator=g)
    bl = Batch(torch.rand((2, 1, 12, 12, 12), generator=g), y, torch.arange(2))
    bu = Batch(torch.rand((2, 1, 12, 12, 12), generator=g), None, torch.arange(2))
    out = method.training_step(bl, bu, info("self-train", 0))
    assert torch.isfinite(out["loss"])
    assert METHODS.get("abd").dims == (2,) and METHODS.get("bcp").dims == (2, 3)


# -- ABD: patches, selection, displacement ---------------------------------------------------------------------------


def per_patch(values: list[list[float]], grid: int = 2, side: int = 2) -> torch.Tensor:
    """``[1, K, grid side, grid side]`` map whose patch j (row-major) holds the constant vector ``values[j]``."""
    k = len(values[0])
    out = torch.zeros((1, k, grid * side, grid * side))
    for j, v in enumerate(values):
        r, c = divmod(j, grid)
        out[0, :, r * side : (r + 1) * side, c * side : (c + 1) * side] = torch.tensor(v)[:, None, None]
    return out


# view 1: patch 0 very confident (class 0), 1 confident (class 1), 2 least confident, 3 in between
LOGITS_1 = [[4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, 1.0]]
# view 2: patch 2 most confident (class 1), 1 confident (class 2), 3 least confident, 0 in between
LOGITS_2 = [[0.0, 0.0, 0.5], [0.0, 0.0, 3.5], [0.0, 4.0, 0.0], [0.0, 0.0, 0.1]]


def test_patch_confidence_and_descriptor_on_a_hand_made_map():
    logits = per_patch(LOGITS_1)
    conf = patch_confidence(logits.softmax(1), 2)
    expected = torch.tensor([max(torch.tensor(v).softmax(0).tolist()) for v in LOGITS_1])
    torch.testing.assert_close(conf[0], expected)
    torch.testing.assert_close(patch_descriptor(logits, 2)[0], torch.tensor(LOGITS_1).log_softmax(1))
    # a non-constant patch: the confidence is the mean of the pixels' max-probabilities
    prob = torch.zeros((1, 2, 4, 4))
    prob[0, 0], prob[0, 1] = 0.9, 0.1
    prob[0, 0, 0, 0], prob[0, 1, 0, 0] = 0.3, 0.7  # one pixel of patch 0: max 0.7
    assert float(patch_confidence(prob, 2)[0, 0]) == pytest.approx((3 * 0.9 + 0.7) / 4)
    assert to_patches(torch.arange(16.0).view(1, 1, 4, 4), 2)[0, 1].flatten().tolist() == [2, 3, 6, 7]


def test_abd_patch_selection_kl_and_plain_branches():
    conf1 = torch.tensor([[max(torch.tensor(v).softmax(0).tolist()) for v in LOGITS_1]] * 2)
    conf2 = torch.tensor([[max(torch.tensor(v).softmax(0).tolist()) for v in LOGITS_2]] * 2)
    logq1 = torch.tensor([LOGITS_1] * 2).log_softmax(-1)
    logq2 = torch.tensor([LOGITS_2] * 2).log_softmax(-1)
    idx = select_patches(conf1, conf2, logq1, logq2, top_num=2, use_kl=torch.tensor([True, False]))
    assert idx["b"].tolist() == [2, 2] and idx["d"].tolist() == [3, 3]  # least confident patches
    # the reference's loop: KL(q2_d || q1_j) over V1's top-2 {0, 1}, KL(q1_b || q2_j) over V2's top-2 {2, 1}
    kl_a = [float(ref_kl_sum(logq1[0, j], logq2[0, 3].exp())) for j in (0, 1)]
    kl_c = [float(ref_kl_sum(logq2[0, j], logq1[0, 2].exp())) for j in (2, 1)]
    assert kl_a[1] < kl_a[0] and kl_c[1] < kl_c[0]  # the less peaked confident patches are the closest
    assert idx["a"].tolist() == [1, 0]  # KL-guided: patch 1; plain: the most confident, patch 0
    assert idx["c"].tolist() == [1, 2]
    with pytest.raises(ValueError):
        select_patches(conf1, conf2, logq1, logq2, top_num=5, use_kl=torch.tensor([True, False]))


def test_displacement_moves_the_chosen_patches_in_order():
    x1 = per_patch([[10.0], [11.0], [12.0], [13.0]])
    x2 = per_patch([[20.0], [21.0], [22.0], [23.0]])

    def values(x: torch.Tensor) -> list[float]:
        return to_patches(x, 2)[0].flatten(1)[:, 0].tolist()

    idx = {k: torch.tensor([v]) for k, v in {"a": 1, "b": 2, "c": 1, "d": 3}.items()}
    n1, n2 = displace(x1, x2, idx, 2)
    assert values(n1) == [10, 11, 21, 13]  # V1's least confident slot b <- V2's patch c
    assert values(n2) == [20, 21, 22, 11]  # V2's least confident slot d <- V1's patch a
    assert values(x1) == [10, 11, 12, 13] and values(x2) == [20, 21, 22, 23]  # inputs untouched
    # a == b (only with ties): the reference reads V1's patch a after writing it
    idx = {k: torch.tensor([v]) for k, v in {"a": 2, "b": 2, "c": 0, "d": 1}.items()}
    n1, n2 = displace(x1, x2, idx, 2)
    assert values(n1) == [10, 11, 20, 13] and values(n2) == [20, 20, 22, 23]


def test_abd_r_on_hand_made_logits():
    l1, l2 = per_patch(LOGITS_1), per_patch(LOGITS_2)
    x1 = per_patch([[10.0], [11.0], [12.0], [13.0]])
    x2 = per_patch([[20.0], [21.0], [22.0], [23.0]])
    kl = abd_r(x1, x2, l1, l2, grid=2, top_num=2, use_kl=torch.tensor([True]))
    plain = abd_r(x1, x2, l1, l2, grid=2, top_num=2, use_kl=torch.tensor([False]))
    assert kl.shape == (2, 1, 4, 4)

    def values(x: torch.Tensor) -> list[float]:
        return to_patches(x, 2).flatten(2)[:, :, 0].tolist()

    assert values(kl) == [[10, 11, 21, 13], [20, 21, 22, 11]]  # a = 1, b = 2, c = 1, d = 3
    assert values(plain) == [[10, 11, 22, 13], [20, 21, 22, 10]]  # a = 0, c = 2


def test_abd_strong_view_cutout_and_jitter():
    g = torch.Generator().manual_seed(4)
    x = 0.25 + 0.5 * torch.rand((6, 1, 32, 32), generator=g)
    y = torch.ones((6, 32, 32), dtype=torch.long)
    xs, ys = strong_view(x, y, torch.Generator().manual_seed(0), cutout_p=1.0, jitter=0.0)
    box = ys == 0
    assert box.any(1).any(1).all()  # every sample got a box (p = 1), where the label is background
    assert set(xs[:, 0][box].unique().tolist()) <= {0.0, 1.0}  # filled with binary noise
    assert torch.equal(xs[:, 0][~box], x[:, 0][~box])  # jitter 0: untouched elsewhere
    area = box.flatten(1).float().mean(1)
    assert ((area > 0) & (area <= 0.4)).all()  # U(0.02, 0.4) of the image, sides rounded down
    none, same = strong_view(x, y, torch.Generator().manual_seed(0), cutout_p=0.0, jitter=0.0)
    assert torch.equal(none, x) and torch.equal(same, y)
    jittered, _ = strong_view(x, None, torch.Generator().manual_seed(0), cutout_p=0.0, jitter=0.8)
    assert not torch.equal(jittered, x) and jittered.min() >= 0 and jittered.max() <= 1


def test_abd_loss_is_the_sum_of_its_terms():
    method = build("abd")
    bl, bu = batches()
    out = method.training_step(bl, bu, info("self-train", 0))
    bcp1 = out["sup/total"] + 0.25 * (out["unsup/dice"] + out["unsup/ce"])
    bcp2 = 0.5 * (out["model2/sup_dice"] + out["model2/sup_ce"]) + 0.25 * (
        out["model2/unsup_dice"] + out["model2/unsup_ce"]
    )
    torch.testing.assert_close(out["loss"], bcp1 + bcp2 + out["unsup/cps"] + out["unsup/cps_displaced"])
    # the displaced-image term trains both students
    grads = torch.autograd.grad(out["unsup/cps_displaced"], [*method.student.parameters()][:1], retain_graph=True)
    grads2 = torch.autograd.grad(out["unsup/cps_displaced"], [*method.student2.parameters()][:1])
    assert float(grads[0].abs().sum()) > 0 and float(grads2[0].abs().sum()) > 0


# -- options and presets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("bcp", {"teacher_mode": "student"}),
        ("bcp", {"mask_ratio": 1.0}),
        ("bcp", {"u_weight": -1.0}),
        ("bcp", {"pretrain_epochs": 4}),  # = trainer.epochs: no self-training left
        ("bcp", {"pretrain_fraction": 1.0}),
        ("abd", {"top_num": 17}),
        ("abd", {"kl_prob": 1.5}),
        ("abd", {"grid": 0}),
    ],
)
def test_bad_options_are_rejected(name, options):
    with pytest.raises(ValueError):
        build(name, **options)


def test_abd_refuses_a_grid_that_does_not_divide_the_image():
    method = build("abd", grid=3)
    bl, bu = batches()
    with pytest.raises(ValueError, match="grid"):
        method.training_step(bl, bu, info("self-train", 1))


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("bcp", {"trainer.batch_size": 3, "trainer.unlabeled_batch_size": 3}, "even labelled batch"),
        ("bcp", {"trainer.unlabeled_batch_size": 4}, "must equal trainer.batch_size"),
        ("abd", {"params.grid": 5}, "must divide dataset.image_size"),
    ],
)
def test_run_configs_the_methods_cannot_train_are_refused_before_training(name, overrides, message):
    from ssl_bench.core.errors import ConfigError
    from ssl_bench.training.runner import resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config(name, "cardiac-phantom", preset="smoke", overrides=overrides)


@pytest.mark.parametrize("name", ["bcp", "abd"])
def test_ssl4mis_preset_is_the_reference_acdc_recipe(name):
    from ssl_bench.training.runner import resolve_config

    cfg = resolve_config(name, "cardiac-phantom", preset="ssl4mis")
    p, t, o = cfg.params, cfg.trainer, cfg.optim
    # 10,000 pre-training + 30,000 self-training iterations
    assert (p.pretrain_epochs, t.epochs, t.iters_per_epoch) == (50, 200, 200)
    method = METHODS.get(name)(p, make_ctx(epochs=t.epochs))
    assert [(s.name, s.epochs * t.iters_per_epoch) for s in method.stages()] == [
        ("pretrain", 10_000),
        ("self-train", 30_000),
    ]
    assert (t.batch_size, t.unlabeled_batch_size) == (12, 12)  # batch 24 = 12 + 12, halves of 6
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.schedule) == ("sgd", 0.01, 0.9, 1e-4, "constant")
    assert (p.u_weight, p.mask_ratio, p.ema_decay, p.ema_warmup, p.largest_cc) == (0.5, 2 / 3, 0.99, False, True)
    assert p.teacher_mode == "train"
    assert cfg.model.backbone == "ssl4mis-unet" and tuple(cfg.dataset.image_size) == (256, 256)
    assert box_side(256, p.mask_ratio) == 170
    if name == "abd":
        assert (p.grid, p.top_num, p.kl_prob, p.cps_weight, p.displaced_weight) == (4, 4, 0.5, 1.0, 1.0)
        assert cfg.dataset.image_size[0] // p.grid == 64  # the reference's --patch_size
        assert (p.cutout_p, p.jitter) == (0.5, 0.8)
