"""Start-up cost of the val/test preflight (issue #18 item 1) on real ACDC: the time to open and check every
validation and test case, against the time the trainer already spends loading the training data, both measured
here in the same process.

    SSL_BENCH_ACDC=/path/to/acdc_ssl4mis python benchmarks/preflight_cost.py [--preset cpu-bench]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-bench")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    root = os.environ.get("SSL_BENCH_ACDC")
    if not root:
        print("set SSL_BENCH_ACDC to the SSL4MIS ACDC folder", file=sys.stderr)
        return 2
    from ssl_bench.training.preflight import check_eval_data, eval_cases
    from ssl_bench.training.runner import build_adapter, resolve_config
    from ssl_bench.training.trainer import load_training_data

    cfg = resolve_config("unet", "acdc", preset=args.preset, data_root=root)
    adapter = build_adapter(cfg)
    load_s, check_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        load_training_data(cfg, adapter, all_labels=False)
        load_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = check_eval_data(cfg, adapter)
        check_s.append(time.perf_counter() - t0)
    cases = {k: len(v) for k, v in eval_cases(cfg, adapter).items()}
    load, check = min(load_s), min(check_s)
    print(f"preset {args.preset}: {n} val/test cases checked ({cases}) in {check:.2f} s (best of {args.repeats}); "
          f"training data load {load:.2f} s; preflight / load = {check / load:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
