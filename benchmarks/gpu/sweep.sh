#!/usr/bin/env bash
# GPU sweep: the benchmark cells in parallel on one GPU, at the SSL4MIS protocol, within a wall-clock budget.
#
#   OUT=/path bash benchmarks/gpu/sweep.sh [--budget-min 8] [--jobs N] [--preset ssl4mis] [--fraction F]
#                                          [--cells FILE] [--dry-run] [--pack] [--set KEY=VALUE]...
#   env: OUT (required unless --dry-run), SSL_BENCH_ACDC (for DATASET=acdc), DEVICE (cuda), DATASET (acdc),
#        PYTHON (python3: the interpreter that imports ssl_bench and torch)
#   test: OUT=/tmp/s DEVICE=cpu DATASET=cardiac-phantom bash benchmarks/gpu/sweep.sh --preset smoke --jobs 2 ...
#
# Each cell of benchmarks/gpu/cells.txt (METHOD SEED [KEY=VALUE ...]) is one
#   ssl-bench run --method M --dataset D --preset P --seed S --device cuda --no-progress --threads 2
#                 --out $OUT/runs [--set trainer.epochs=K ...]
# (run as `$PYTHON -m ssl_bench run ...`). A method that `ssl-bench list methods` does not know, or a cell whose
# config does not resolve, is skipped with a warning. Writes:
#   $OUT/plan.json     cells, fraction, assumptions, start / end times, per-cell status, exit code, run folder,
#                      record, measured training time; rewritten after every event
#   $OUT/logs/NN-METHOD-seedS.log   each run's stdout + stderr
#   $OUT/runs/...      the run folders (checkpoints included: interrupted ones continue with ssl-bench resume)
#   $OUT/records/...   each finished run's record (ssl_bench.reporting.results.export_records, root $OUT/runs):
#                      copy into results/records to commit
#   $OUT/sweep.tar.gz  with --pack: plan.json, records/ and logs/ in one file
# Exit code: 0 when no launched run failed (runs the budget stopped are not failures), 1 when one failed,
# 2 on bad input (one line on stderr, before anything starts: OUT unset, SSL_BENCH_ACDC unset or missing, ...),
# 130 when the sweep itself got SIGINT / SIGTERM (Ctrl-C): it stops its runs as at the budget's end.
#
# Budget. A cell starts only while its predicted duration ends before the budget's last --margin-s seconds
# (ssl4mis: 60); then every run still going gets SIGINT (the trainer writes checkpoints/last.pt at its next step
# and exits; `ssl-bench resume RUN_DIR` continues it exactly), SIGTERM after --grace-s (30) more, SIGKILL 10 s
# later; records and plan.json are written after that, inside the budget.
#
# Fraction. The full protocol is each method's own ssl4mis schedule (30,000 iterations = 150 epochs x 200
# steps; BCP / ABD 200 epochs with 50 of pre-training, UniMatch 300 full passes). Where the budget does not allow
# it, every cell runs the same fraction F of its schedule: --set trainer.epochs=round(F x epochs) (and
# params.*_epochs, e.g. BCP's pre-training, scaled alike), recorded in plan.json and in each run's config.yaml /
# manifest command. --fraction F sets it; otherwise F = k/150 for the largest k at which the first --jobs cells
# of the file (one wave; --waves W for W waves) all fit the budget under this cost model:
#   run seconds = overhead_s + K x (val_s + steps_per_epoch x sec_per_iter x cost[method])
# ASSUMPTIONS (--preset ssl4mis, not measured: no GPU was available when this was written):
#   sec_per_iter = 0.08 s: one training iteration of a cost-1.0 method (one forward + backward of the
#       ssl4mis-unet, width 16, on 12 + 12 slices of 256^2, AMP) per run while 8 runs share one H200 and each has
#       2 CPU threads. Reasoning: ~8-10 ms of GPU work per iteration, time-sliced between 8 processes (~70 ms), the
#       batch's CPU-side augmentation (torch, ~15-25 ms on 2 threads) overlapping with the other runs' GPU work.
#   overhead_s = 75 s per run (start-up + CUDA init + loading ACDC's 1312 slices and 30 volumes + testing both
#       checkpoints on 20 patients with the full metric suite); val_s = 4 s per validation (every epoch).
#   cost: unet / fully-supervised 0.5 (12 labelled slices), mean-teacher 1.15, ua-mt 2.3, coranet 1.6, bcp 1.3,
#       unimatch 2.0, abd 2.5, cps 2.0, others 1.5 (METHOD_COST in benchmarks/gpu/sweep.py).
#   With these, 8 minutes and 8 jobs give F = 15/150 = 0.1 (3,000 of 30,000 iterations; 14/150 where start-up
#   takes 10 s): the file's first 8 cells (unet x 3, fully-supervised x 3, mean-teacher seeds 0, 1) run, the rest
#   are reported "not-started". More cells at a smaller fraction: e.g. --fraction 0.03 starts 16.
# RE-CALIBRATE: after a sweep, plan.json's "calibration" holds the median measured seconds per iteration and
# overhead of the finished runs and the fraction they imply ("suggested"); pass --fraction F (or --sec-per-iter S
# --overhead-s O --val-s 0) next time. --dry-run prints the plan (fraction, epochs, predicted end of each cell,
# commands) without running anything.
#
# --preset smoke (with DEVICE=cpu DATASET=cardiac-phantom) runs the smoke preset whole, for testing this script
# (tests/test_gpu_sweep.py).
#
# Throughput. Before the sweep (not with --dry-run, nor with DEVICE=cpu, nor THROUGHPUT=0), benchmarks/throughput.py
# measures training images/s and inference slices/s (full precision vs AMP + channels-last + cudnn.benchmark) on
# the device, ~1 minute: $OUT/throughput.json and $OUT/logs/throughput.log. It runs outside --budget-min.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case " $* " in *" --dry-run "*) dry=1 ;; *) dry=0 ;; esac
if [[ "$dry" == 0 && "${DEVICE:-cuda}" != cpu && "${THROUGHPUT:-1}" != 0 && -n "${OUT:-}" ]]; then
  mkdir -p "$OUT/logs"
  "${PYTHON:-python3}" "$here/../throughput.py" --device "${DEVICE:-cuda}" --steps 30 --json "$OUT/throughput.json" \
    >"$OUT/logs/throughput.log" 2>&1 || echo "warning: benchmarks/throughput.py failed (see $OUT/logs/throughput.log)" >&2
fi
exec "${PYTHON:-python3}" "$here/sweep.py" "$@"
