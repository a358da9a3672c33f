"""ABD: Adaptive Bidirectional Displacement on top of BCP (the "Ours-ABD (BCP)" variant, 2D).

Paper: H. Chi, J. Pang, B. Zhang, W. Liu, "Adaptive Bidirectional Displacement for Semi-Supervised Medical Image
Segmentation", CVPR 2024, pp. 4070-4080 (arXiv:2405.00378). Reference implementation: github.com/chy-upc/ABD
(the repository the paper and ``Star-chy/ABD`` point to), ``code/train_ACDC_BCP.py`` (``self_train``),
``code/utils/displacement.py`` (``ABD_R_BCP``) and ``code/dataloaders/dataset.py`` (``WeakStrongAugment``,
``cutout_gray``, ``color_jitter``). BCP's pre-training, box, mixing, pseudo-labels and mixed loss are reused from
:class:`~ssl_bench.methods.bcp.BCP` and :mod:`ssl_bench.training.copy_paste`.

Not implemented: the Cross-Teaching variant (``code/train_ACDC_Cross_Teaching.py``, a U-Net and a Swin-UNet with an
ImageNet-pretrained Swin-T, 224^2 inputs, and the labelled ABD-I displacement), which needs a transformer and
weights not available here. ABD-I is not used by the BCP variant.

Method (equation numbers are this docstring's; the paper's numbering was not checked here). Pre-training: BCP's
(:class:`~ssl_bench.methods.bcp.BCP`, Eq. 1 there). Self-training, per step:

* two students f_1 (tested) and f_2, both the pre-trained student at the first self-training step, and BCP's EMA
  teacher f' (updated from f_1 only, beta = 0.99);
* a weak view (the trainer's augmentation) and a strong view of every image (A): with p = 0.5 a cutout box (area
  U(0.02, 0.4) of the image, aspect U(0.3, 1/0.3)) filled with random {0, 1} pixels and labelled background (0),
  then brightness and contrast factors U[0.2, 1.8] in a random order (``ColorJitter(0.8, 0.8, 0.8, 0.2)`` on a
  one-channel slice, where saturation and hue do nothing);
* BCP on each view with the same box M (BCP Eq. 3-5): f_1 on the weak mixed images with the teacher's pseudo-labels
  of the weak unlabelled images, f_2 on the strong ones with the strong pseudo-labels and the strong labels:
  L_bcp^1, L_bcp^2;
* cross pseudo-supervision on the 2n mixed images x^k = cat(x_in^k, x_out^k) of view k (o^k: logits of f_k):

  (1) L_cps = D(o^1, argmax o^2) + D(o^2, argmax o^1)   (D: squared-denominator Dice, all classes, no mask)

* ABD-R displacement (``ABD_R_BCP``) on a g x g grid of patches (g = 4: 64^2 patches of a 256^2 image). For image i
  of view k: patch confidence kappa^k_j = mean over patch j of max_c softmax(o^k) (detached), patch descriptor
  q^k_j = softmax_c(mean over patch j of o^k), least confident patch b = argmin kappa^1, d = argmin kappa^2, and the
  top-t (t = 4) confident patches T^1, T^2. With probability 0.5 (per image) the KL-guided choice

  (2) a = argmin_{j in T^1} KL(q^2_d || q^1_j),  c = argmin_{j in T^2} KL(q^1_b || q^2_j),

  otherwise the plain one a = argmax kappa^1, c = argmax kappa^2. Then, in this order,

  (3) patch b of x^1 <- patch c of x^2;  patch d of x^2 <- patch a of (the displaced) x^1,

  and X_R = cat(x^1', x^2') (4n images, no labels);
* cross pseudo-supervision on the displaced images (r^k = f_k(X_R)):

  (4) L_disp = D(r^1, argmax r^2) + D(r^2, argmax r^1)

  (5) L = L_bcp^1 + L_bcp^2 + L_cps + L_disp   (weights ``cps_weight`` = ``displaced_weight`` = 1, no ramp).

Logged: f_1's BCP terms as ``sup/*``/``unsup/*`` (see BCP), f_2's as ``model2/*`` (they have no gradient with respect
to f_1, which ``ssl-bench check`` tests ``unsup/*`` terms against), ``unsup/cps`` (1) and ``unsup/cps_displaced`` (4).

Presets: ``ssl4mis`` = the reference's ACDC run (BCP's: 10k + 30k iterations, constant lr 0.01, batch 12 + 12,
alpha 0.5, beta 0.99, ratio 2/3) with a 4 x 4 grid and top-4.

Deviations from the reference, besides BCP's (see :mod:`ssl_bench.methods.bcp`):

* 2D only: the strong view and the patch grid are defined on slices; a 3D variant would be a design of ours;
* the strong view is made on the batch by the method (a torch generator per step) rather than in the data loader;
  the cutout box is :func:`~ssl_bench.training.strong_augment.cutmix_boxes` (area drawn once, then aspect and corner
  redrawn until the box fits, UniMatch's rule), while ``cutout_gray`` redraws the area at every try too, which
  favours smaller boxes a little; on images with C > 1 channels only brightness and contrast are jittered;
* model 2 starts self-training with fresh optimiser momentum (the reference loads the pre-training optimiser state
  into both optimisers); one optimiser holds both students;
* the patch descriptor's log uses ``log_softmax`` (the reference takes ``softmax(...).log()``, equal unless a
  probability underflows); ties in arg-min/arg-max/top-k follow torch's first-index rule, as the reference;
* the image side must be divisible by ``grid`` (the reference's einops rearrangement has the same requirement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.bcp import BCP, BCPConfig
from ssl_bench.training.copy_paste import DICE_EPS, bidirectional_loss
from ssl_bench.training.losses import soft_dice_loss
from ssl_bench.training.strong_augment import cutmix_boxes, intensity_jitter, mix_with_mask, step_generator

# -- ABD-R on patch grids ------------------------------------------------------------------------------------------


def to_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, grid^2, C, H/grid, W/grid]``, patches in row-major order (einops
    ``b c (h p1) (w p2) -> b (h w) c p1 p2``)."""
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"ABD's patch grid {grid} must divide the image size {h}x{w}: set params.grid")
    ph, pw = h // grid, w // grid
    return x.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)


def from_patches(p: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`to_patches`: ``[B, grid^2, C, ph, pw]`` -> ``[B, C, grid ph, grid pw]``."""
    b, _, c, ph, pw = p.shape
    return p.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * ph, grid * pw)


def patch_confidence(prob: torch.Tensor, grid: int) -> torch.Tensor:
    """kappa ``[B, grid^2]``: the mean over each patch of ``max_c prob`` (``prob [B, K, H, W]``)."""
    return to_patches(prob.max(1, keepdim=True).values, grid).flatten(2).mean(2)


def patch_descriptor(logits: torch.Tensor, grid: int) -> torch.Tensor:
    """log q ``[B, grid^2, K]``: log-softmax over classes of each patch's mean logits (``logits [B, K, H, W]``)."""
    return F.log_softmax(to_patches(logits, grid).flatten(3).mean(3), dim=-1)


def select_patches(
    conf1: torch.Tensor,
    conf2: torch.Tensor,
    logq1: torch.Tensor,
    logq2: torch.Tensor,
    top_num: int,
    use_kl: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Eq. 2 per image: indices ``[B]`` of the patches ``a`` (view 1, source), ``b`` (view 1, replaced), ``c`` (view 2,
    source), ``d`` (view 2, replaced) from confidences ``conf [B, P]`` and log-descriptors ``logq [B, P, K]``;
    ``use_kl [B]`` bool picks the KL-guided choice (else the most confident patch)."""
    if not 1 <= top_num <= conf1.shape[1]:
        raise ValueError(f"params.top_num must be in 1..{conf1.shape[1]} (patches per image), got {top_num}")
    rows = torch.arange(conf1.shape[0], device=conf1.device)
    b, d = conf1.argmin(1), conf2.argmin(1)
    top1, top2 = conf1.topk(top_num, dim=1).indices, conf2.topk(top_num, dim=1).indices  # [B, t]

    def closest(top: torch.Tensor, logq_top: torch.Tensor, logq_worst: torch.Tensor) -> torch.Tensor:
        # KL(q_worst || q_j) = sum_k q_worst (log q_worst - log q_j) for j in top
        cand = logq_top[rows[:, None], top]  # [B, t, K]
        kl = (logq_worst.exp()[:, None] * (logq_worst[:, None] - cand)).sum(-1)  # [B, t]
        return top.gather(1, kl.argmin(1, keepdim=True)).squeeze(1)

    a_kl = closest(top1, logq1, logq2[rows, d])
    c_kl = closest(top2, logq2, logq1[rows, b])
    use_kl = use_kl.to(conf1.device)
    a = torch.where(use_kl, a_kl, conf1.argmax(1))
    c = torch.where(use_kl, c_kl, conf2.argmax(1))
    return {"a": a, "b": b, "c": c, "d": d}


def displace(
    x1: torch.Tensor, x2: torch.Tensor, idx: dict[str, torch.Tensor], grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3: patch ``b`` of ``x1`` <- patch ``c`` of ``x2``, then patch ``d`` of ``x2`` <- patch ``a`` of the new
    ``x1`` (``x [B, C, H, W]``; new tensors, the inputs are untouched)."""
    rows = torch.arange(x1.shape[0], device=x1.device)
    p1, p2 = to_patches(x1, grid).clone(), to_patches(x2, grid).clone()
    p1[rows, idx["b"]] = p2[rows, idx["c"]]
    p2[rows, idx["d"]] = p1[rows, idx["a"]]
    return from_patches(p1, grid), from_patches(p2, grid)


def abd_r(
    x1: torch.Tensor,
    x2: torch.Tensor,
    logits1: torch.Tensor,
    logits2: torch.Tensor,
    grid: int,
    top_num: int,
    use_kl: torch.Tensor,
) -> torch.Tensor:
    """``ABD_R_BCP``: the displaced batch ``cat(x1', x2')`` ``[2B, C, H, W]`` from the views ``x1``, ``x2`` and their
    models' logits (detached here)."""
    logits1, logits2 = logits1.detach().float(), logits2.detach().float()
    conf1, conf2 = patch_confidence(logits1.softmax(1), grid), patch_confidence(logits2.softmax(1), grid)
    idx = select_patches(
        conf1, conf2, patch_descriptor(logits1, grid), patch_descriptor(logits2, grid), top_num, use_kl
    )
    return torch.cat(displace(x1, x2, idx, grid))


# -- the strong view -----------------------------------------------------------------------------------------------


def strong_view(
    x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator, cutout_p: float, jitter: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ABD's ``WeakStrongAugment`` strong view of a weak batch ``x [B, C, H, W]`` (labels ``y [B, H, W]`` or None):
    with probability ``cutout_p`` a cutout box of random {0, 1} pixels (label 0 there), then brightness/contrast
    jitter with factors ``U[1 - jitter, 1 + jitter]``."""
    n, _, h, w = x.shape
    box = cutmix_boxes(n, (h, w), generator, p=cutout_p, area=(0.02, 0.4), ratio=(0.3, 1 / 0.3)).to(x.device)
    noise = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype)  # cutout_gray(value 0..1)
    xs = intensity_jitter(mix_with_mask(x, noise, box), generator, p=1.0, brightness=jitter, contrast=jitter)
    ys = None if y is None else mix_with_mask(y, torch.zeros_like(y), box)
    return xs, ys


def cps_dice(logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``D(logits, argmax other)``: the reference's unmasked ``DiceLoss`` against the other model's hard labels."""
    return soft_dice_loss(logits, other.detach().argmax(1), eps=DICE_EPS, squared=True)


# -- the method ----------------------------------------------------------------------------------------------------


@dataclass
class ABDConfig(BCPConfig):
    """Options of ABD (defaults: chy-upc/ABD ``code/train_ACDC_BCP.py``); BCP's options apply to both students."""

    #: patches per image side (reference: h_size = w_size = 4, patch_size 64 on 256^2 slices)
    grid: int = 4
    #: most confident patches among which the KL-guided choice picks (reference --top_num: 4)
    top_num: int = 4
    #: per-image probability of the KL-guided choice instead of the plain arg-max (reference: random() < 0.5)
    kl_prob: float = 0.5
    #: weight of the cross pseudo-supervision on the mixed images, Eq. 1 (reference: 1)
    cps_weight: float = 1.0
    #: weight of the cross pseudo-supervision on the displaced images, Eq. 4 (reference: 1)
    displaced_weight: float = 1.0
    #: probability of the strong view's cutout box (reference cutout_gray: p = 0.5)
    cutout_p: float = 0.5
    #: brightness and contrast strength of the strong view (reference ColorJitter: 0.8)
    jitter: float = 0.8


@METHODS.register("abd")
class ABD(BCP):
    """ABD (CVPR 2024, BCP variant): two students on weak/strong BCP views with adaptive patch displacement."""

    Config = ABDConfig
    config_prefix = "abd"
    dims = (2,)
    presets = {
        "smoke": {},
        "cpu": {},
        "ssl4mis": {**BCP.presets["ssl4mis"], "params.grid": 4, "params.top_num": 4, "params.kl_prob": 0.5},
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        if c.grid < 1 or c.top_num < 1 or c.top_num > c.grid * c.grid:
            raise ValueError(f"need params.grid >= 1 and 1 <= params.top_num <= grid^2, got {c.grid}, {c.top_num}")
        for name in ("kl_prob", "cutout_p"):
            if not 0.0 <= getattr(c, name) <= 1.0:
                raise ValueError(f"params.{name} must be in [0, 1], got {getattr(c, name)}")
        if c.cps_weight < 0 or c.displaced_weight < 0 or c.jitter < 0:
            raise ValueError("params.cps_weight, params.displaced_weight and params.jitter must be >= 0")
        self.student2 = ctx.build_backbone()

    @classmethod
    def check_config(cls, cfg: Any, dims: int) -> None:
        super().check_config(cfg, dims)
        grid = cfg.params.grid
        if grid >= 1 and any(s % grid for s in cfg.dataset.image_size):
            raise ValueError(
                f"ABD's patch grid params.grid={grid} must divide dataset.image_size {tuple(cfg.dataset.image_size)}"
            )

    def start_self_training(self) -> None:
        """Both students and the teacher start from the pre-trained student."""
        super().start_self_training()
        self.student2.load_state_dict(self.student.state_dict())

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None or step.stage == "pretrain":
            return self.pretrain_step(batch_l)
        assert batch_l.label is not None, "labelled batch without labels"
        c = self.cfg
        gen = step_generator()
        x_l, y_l, x_u = batch_l.image, batch_l.label, batch_u.image
        x_ls, y_ls = strong_view(x_l, y_l, gen, c.cutout_p, c.jitter)
        x_us, _ = strong_view(x_u, None, gen, c.cutout_p, c.jitter)
        keep = self.box(x_l, gen)
        (w_in, w_out), t_w = self.copy_paste(x_l, y_l, x_u, keep)
        assert y_ls is not None
        (s_in, s_out), t_s = self.copy_paste(x_ls, y_ls, x_us, keep)
        o1_in, o1_out = self.student(w_in), self.student(w_out)
        o2_in, o2_out = self.student2(s_in), self.student2(s_out)
        out = bidirectional_loss(o1_in, o1_out, *t_w, keep, c.u_weight)
        bcp2 = bidirectional_loss(o2_in, o2_out, *t_s, keep, c.u_weight)
        o1, o2 = torch.cat([o1_in, o1_out]), torch.cat([o2_in, o2_out])
        out["unsup/cps"] = cps_dice(o1, o2) + cps_dice(o2, o1)  # Eq. 1
        use_kl = torch.rand(o1.shape[0], generator=gen) < c.kl_prob
        x_r = abd_r(torch.cat([w_in, w_out]), torch.cat([s_in, s_out]), o1, o2, c.grid, c.top_num, use_kl)
        r1, r2 = self.student(x_r), self.student2(x_r)
        out["unsup/cps_displaced"] = cps_dice(r1, r2) + cps_dice(r2, r1)  # Eq. 4
        out["loss"] = (
            out["loss"]
            + bcp2["loss"]
            + c.cps_weight * out["unsup/cps"]
            + c.displaced_weight * out["unsup/cps_displaced"]
        )  # Eq. 5
        for key in ("sup/dice", "sup/ce", "unsup/dice", "unsup/ce"):
            out[f"model2/{key.replace('/', '_')}"] = bcp2[key]
        out["weight/unsup"] = torch.tensor(0.5 * c.u_weight)
        out["abd/kl_frac"] = use_kl.float().mean()
        return out
