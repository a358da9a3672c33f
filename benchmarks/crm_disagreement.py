"""Where CoraNet's conservative and radical heads disagree, per ground-truth class (issue #15 analysis).

Loads a CoraNet run's checkpoint and, on the validation volumes (slices resized as the run's
``dataset.image_resize``, at its ``dataset.image_size``), counts for each ground-truth class k:

* the share of its pixels that are uncertain (Y_con != Y_rad, Eq. 5), and the (Y_con, Y_rad) class pairs there;
* the share that are *certain and predicted background by the main head*: pixels C-SN trains as background;
* the recall of the main, conservative and radical heads' class maps.

Labels are read for analysis only; nothing is trained.

    SSL_BENCH_ACDC=/path/to/acdc_ssl4mis python benchmarks/crm_disagreement.py RUN_DIR [--checkpoint best.pt]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import torch


def analyse(run_dir: Path, checkpoint: str = "best.pt", cases: int | None = None) -> dict:
    """Per ground-truth class counts of a CoraNet checkpoint on the validation split (see the module docstring).

    Returns ``{"step", "size", "mode", "classes": [{"class", "pixels", "uncertain", "certain_bg", "recall":
    {head: n}, "pairs": {(con, rad): n}}]}`` with pixel counts, not shares. Raises ``ValueError`` for a run
    that is not a CoraNet run with the CRM estimator, ``FileNotFoundError`` for a missing checkpoint.
    """
    from ssl_bench.core.transforms import resize_images, resize_labels
    from ssl_bench.methods.coranet import CoraNet, vote
    from ssl_bench.training.runner import build_adapter, build_method, load_run

    cfg, _ = load_run(run_dir, training=False)
    adapter = build_adapter(cfg)
    method = build_method(cfg, adapter)
    if not isinstance(method, CoraNet) or not method.crm:
        raise ValueError(f"{run_dir} is not a CoraNet run with the CRM estimator (method {cfg.method})")
    path = Path(run_dir) / "checkpoints" / checkpoint
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path} (use best.pt or last.pt)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    method.load_state_dict(state["model"])
    method.eval()
    size, mode, k = tuple(cfg.dataset.image_size), cfg.dataset.image_resize, adapter.spec.num_classes

    rows = [{"class": c, "pixels": 0, "uncertain": 0, "certain_bg": 0, "recall": collections.Counter(),
             "pairs": collections.Counter()} for c in range(k)]  # fmt: skip
    for case_id in adapter.splits()["val"][:cases]:
        case = adapter.load_case(case_id)  # image, label: (Z, Y, X)
        x = resize_images(torch.as_tensor(np.asarray(case.image, np.float32))[:, None], size, mode)
        y = resize_labels(torch.as_tensor(np.asarray(case.label, np.int64)), size, mode)
        with torch.no_grad():
            heads = method.student.forward_heads(x, ["con", "rad"])
        maps = {"main": heads["main"].argmax(1), "con": vote(heads["con"]), "rad": vote(heads["rad"])}
        unc = maps["con"] != maps["rad"]  # Eq. 5
        for row in rows:
            gt = y == row["class"]
            row["pixels"] += int(gt.sum())
            row["uncertain"] += int((gt & unc).sum())
            row["certain_bg"] += int((gt & ~unc & (maps["main"] == 0)).sum())
            for name, pred in maps.items():
                row["recall"][name] += int((gt & (pred == row["class"])).sum())
            where = gt & unc
            row["pairs"].update(zip(maps["con"][where].tolist(), maps["rad"][where].tolist()))
    step = state.get("step", state.get("position", {}).get("step"))
    return {"step": step, "size": size, "mode": mode, "classes": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--checkpoint", default="best.pt", help="file under RUN_DIR/checkpoints (best.pt, last.pt)")
    ap.add_argument("--cases", type=int, default=None, help="only the first N validation volumes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        out = analyse(args.run_dir, args.checkpoint, args.cases)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = out["size"]
    where = f"validation split, {size[0]}x{size[1]} ({out['mode']})"
    print(f"{args.run_dir} {args.checkpoint} (step {out['step']}), {where}")
    print(
        "| GT class | pixels | uncertain | certain, main = bg | recall main | recall con | recall rad "
        "| top (con, rad) pairs in the uncertain |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in out["classes"]:
        n, n_unc = max(1, row["pixels"]), max(1, row["uncertain"])
        top = ", ".join(f"({a}, {b}) {v / n_unc:.2f}" for (a, b), v in row["pairs"].most_common(3))
        recall = " | ".join(f"{row['recall'][h] / n:.3f}" for h in ("main", "con", "rad"))
        print(
            f"| {row['class']} | {row['pixels']} | {row['uncertain'] / n:.3f} | {row['certain_bg'] / n:.3f} "
            f"| {recall} | {top} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
