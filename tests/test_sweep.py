"""``ssl-bench sweep``: grid expansion, planning against the results tree, the local and submitit executors (the
latter through submitit's local executor and a mocked ``sbatch``), requeue-resume of a pre-empted task."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ssl_bench.core.errors import ConfigError, SSLBenchError
from ssl_bench.core.io import read_json

TINY = ["trainer.epochs=1", "trainer.iters_per_epoch=2", "trainer.val_every=1"]
GRID_ITEMS = ["method=unet", "seed=0,1", "optim.lr=1e-3,3e-4"]
GRID = [*[a for g in GRID_ITEMS for a in ("--grid", g)], *[a for s in TINY for a in ("--set", s)], "--preset", "smoke"]


def _spec():
    from ssl_bench.reporting.sweep import load_spec

    spec = load_spec(None, GRID_ITEMS, dict(s.split("=") for s in TINY))
    spec.preset = "smoke"
    return spec


def test_grid_expands_in_order_with_flags_and_set_keys(tmp_path):
    from ssl_bench.reporting.sweep import expand, load_spec

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "preset: smoke\ngrid:\n  method: [unet, mean-teacher]\n  labeled: [0.2]\nset:\n  trainer.epochs: 2\n"
    )
    spec = load_spec(spec_file, ["seed=0,1", "optim.lr=1e-3,3e-4"])
    points = expand(spec)
    assert len(points) == 2 * 2 * 2
    sel, seed = points[0]
    assert (sel.method, sel.preset, sel.labeled, seed) == ("unet", "smoke", 0.2, 0)
    assert dict(sel.extra) == {"optim.lr": "1e-3", "trainer.epochs": 2}
    assert [(p[0].method, p[1], dict(p[0].extra)["optim.lr"]) for p in points[:3]] == [
        ("unet", 0, "1e-3"),
        ("unet", 0, "3e-4"),
        ("unet", 1, "1e-3"),
    ]
    cmd = sel.command(seed, "OUT")
    assert cmd[:2] == ["ssl-bench", "run"] and "optim.lr=1e-3" in cmd and "trainer.epochs=2" in cmd


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["seed"], "expected KEY=V1,V2"),
        (["seed=0,1"], "needs a method"),
        (["method=unet", "seed=x"], "seed must be an integer"),
        (["method=no-such-method"], "no-such-method"),
        (["method=unet", "optim.nope=1"], "optim.nope"),
    ],
)
def test_bad_grids_are_refused_before_any_run(grid, message, tmp_path):
    from ssl_bench.reporting.sweep import load_spec, plan_sweep

    with pytest.raises(SSLBenchError, match=message):  # ConfigError, RegistryError: one line, exit 2
        plan_sweep(load_spec(None, grid), tmp_path)
    assert not (tmp_path / "cardiac-phantom").exists()


def test_bad_spec_and_profile_keys(tmp_path):
    from ssl_bench.reporting.slurm import load_profile
    from ssl_bench.reporting.sweep import load_spec

    bad = tmp_path / "s.yaml"
    bad.write_text("grids: {seed: [0]}\n")
    with pytest.raises(ConfigError, match="unknown key.*grids"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="unknown SLURM option.*gpu_count"):
        load_profile(None, {"gpu_count": 2})


def test_sbatch_file_holds_the_requested_resources(tmp_path):
    """The array submitted through submitit's SlurmExecutor (``sbatch`` mocked by submitit's own test double) and the
    --dry-run rendering carry partition, time, GPUs, CPUs, memory, parallelism and the per-task log."""
    pytest.importorskip("submitit")
    from submitit.slurm.test_slurm import mocked_slurm

    from ssl_bench.reporting.slurm import RunTask, load_profile, make_executor, sbatch_script
    from ssl_bench.reporting.sweep import plan_sweep

    profile = tmp_path / "cluster.yaml"
    profile.write_text("partition: gpu-a100\ntime: 90\ngpus: 1\ncpus: 8\nmem: 32G\nsetup: [module load cuda]\n")
    opts = load_profile(profile, {"partition": "overridden", "qos": "normal"}, array_parallelism=3)
    plan = plan_sweep(_spec(), tmp_path / "runs")
    with mocked_slurm():
        executor = make_executor(tmp_path / "logs", opts, "slurm")
        with executor.batch():
            jobs = [executor.submit(RunTask(m, tmp_path / "runs")) for m in plan]
        (script,) = (tmp_path / "logs").rglob("*_submission.sh")  # one sbatch file: one array
        text = script.read_text()
    assert len(jobs) == 4 and jobs[3].job_id.endswith("_3")
    expected = [
        "#SBATCH --array=0-3%3",
        "#SBATCH --partition=gpu-a100",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --qos=normal",
        "#SBATCH --signal=USR2@120",
        "module load cuda",
    ]
    for line in expected:
        assert line in text, line
    assert "--error" not in text and "_log.out" in text  # one log file per task
    rendered = sbatch_script(opts, tmp_path / "logs", len(plan))
    for line in expected:
        assert line in rendered, line


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A run of the grid's point (seed 0, lr 1e-3) stopped after 1 of its 2 steps (a SIGTERM'd job)."""
    import os

    from ssl_bench.core.errors import SSLBenchError
    from ssl_bench.training import trainer as trainer_mod
    from ssl_bench.training.runner import resolve_config, start_run

    root = tmp_path_factory.mktemp("killed")
    os.environ.setdefault("SSL_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    cfg = resolve_config(
        "unet",
        "cardiac-phantom",
        preset="smoke",
        seed=0,
        labeled=0.2,
        overrides=dict(s.split("=") for s in [*TINY, "optim.lr=1e-3"]),
    )
    original = trainer_mod.Trainer._train_step

    def stop_after_first(self, stage):
        values = original(self, stage)
        self._stop = True
        return values

    trainer_mod.Trainer._train_step = stop_after_first
    try:
        with pytest.raises(SSLBenchError, match="stopped at step 1"):
            start_run(cfg, out=root, device="cpu", progress=False, echo=lambda s: None)
    finally:
        trainer_mod.Trainer._train_step = original
    (run_dir,) = [p.parent for p in root.rglob("manifest.json")]
    assert read_json(run_dir / "manifest.json")["status"] == "interrupted"
    return run_dir


def _copy_killed(killed_run: Path, out: Path) -> Path:
    target = out / killed_run.relative_to(killed_run.parents[4])
    shutil.copytree(killed_run, target)
    return target


def _dice(out: Path) -> dict[tuple[int, float], float]:
    values = {}
    for path in out.rglob("eval/test/summary.json"):
        s = read_json(path)
        values[(s["seed"], s["config"]["optim"]["lr"])] = s["foreground_mean"]["dice"]
    return values


@pytest.mark.parametrize("executor", ["local", pytest.param("submitit-local", marks=pytest.mark.slow)])
def test_sweep_2x2_runs_skips_and_resumes_the_killed_run(executor, killed_run, tmp_path, cli, capsys):
    out = tmp_path / "runs"
    killed = _copy_killed(killed_run, out)
    args = ["sweep", *GRID, "--out", out, "--threads", "1"]
    assert cli(*args, "--dry-run") == 0
    plan = capsys.readouterr().out
    assert "3 to start, 1 to resume" in plan and f"ssl-bench resume {killed}" in plan
    if executor == "local":
        assert cli(*args, "--jobs", "2") == 0
    else:
        pytest.importorskip("submitit")
        assert cli(*args, "--executor", "slurm", "--submitit-cluster", "local", "--log-dir", tmp_path / "logs") == 0
        logs = sorted((tmp_path / "logs").rglob("*_log.out"))
        assert len(logs) == 4  # one log per task
    assert "4 run(s) finished, 0 failed" in capsys.readouterr().out or executor != "local"
    manifest = read_json(killed / "manifest.json")
    assert manifest["status"] == "finished" and manifest["resumed"][0]["step"] == 1
    dice = _dice(out)
    assert len(dice) == 4 and len({p.parent for p in out.rglob("manifest.json")}) == 4
    assert cli(*args, "--dry-run") == 0  # everything finished: nothing to run
    assert "0 to start, 0 to resume, 4 finished" in capsys.readouterr().out
    reference = Path(str(killed_run.parents[4]) + "-dice.json")
    if reference.exists():  # the other executor ran first: the same grid gives the same numbers
        import json

        assert {str(k): v for k, v in dice.items()} == json.loads(reference.read_text())
    else:
        import json

        reference.write_text(json.dumps({str(k): v for k, v in dice.items()}))


def test_preempted_task_checkpoints_and_requeues_as_a_resume_of_its_own_folder(killed_run, tmp_path):
    """__submitit_checkpoint__ (called by submitit on USR2) returns a resubmission that resumes the task's own run
    folder; submitit's local executor runs it to the end."""
    submitit = pytest.importorskip("submitit")
    from ssl_bench.reporting.slurm import RunTask, SlurmOptions, make_executor
    from ssl_bench.reporting.sweep import plan_sweep

    out = tmp_path / "runs"
    plan = [m for m in plan_sweep(_spec(), out) if m.seed == 0 and dict(m.selector.extra)["optim.lr"] == "1e-3"]
    task = RunTask(plan[0], out, threads=1)
    assert task.entry.action == "run"
    killed = _copy_killed(killed_run, out)  # the task's own run, killed while the job ran
    resubmission = task.__submitit_checkpoint__()
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    again = resubmission.function
    assert again.entry.action == "resume" and Path(again.entry.run_dir) == killed
    job = make_executor(tmp_path / "logs", SlurmOptions(time=5), "local").submit(again)
    assert job.result() == str(killed)
    assert read_json(killed / "manifest.json")["status"] == "finished"


def test_readme_sweep_spec_example_expands(tmp_path):
    import re

    from ssl_bench.reporting.slurm import load_profile
    from ssl_bench.reporting.sweep import expand, load_spec

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(preset: .*?)```", readme, re.S)
    assert block, "README has no sweep spec example"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(block.group(1))
    spec = load_spec(spec_file)
    assert len(expand(spec)) == 3 * 3 * 2 and spec.executor == "slurm"
    assert load_profile(None, spec.slurm).gpus == 1


@pytest.mark.skipif(bool(shutil.which("srun")), reason="on a SLURM cluster this would submit")
def test_table_run_missing_slurm_without_slurm_is_one_line(cli, capsys, tmp_path):
    code = cli(
        "table",
        "IX",
        "--preset",
        "smoke",
        "--dataset",
        "acdc=cardiac-phantom",
        "--results",
        tmp_path,
        "--run-missing",
        "--executor",
        "slurm",
        "--no-write",
    )
    assert code == 2 and "cannot use SLURM here" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("SSL_BENCH_REQUEUE_TEST"), reason="timing-dependent (~1-2 min); opt in")
def test_a_timed_out_task_is_requeued_and_resumes_its_own_run(tmp_path):
    """The real signal path on submitit's local executor: USR2 ``signal_delay_s`` before the time-out ->
    checkpoint (SIGTERM to the run) -> requeue -> ``ssl-bench resume`` of the same folder, until it finishes."""
    pytest.importorskip("submitit")
    from ssl_bench.reporting.slurm import SlurmOptions, submit_plan
    from ssl_bench.reporting.sweep import load_spec, plan_sweep

    out = tmp_path / "runs"
    spec = load_spec(None, ["method=unet", "seed=0"], {"trainer.epochs": "80", "trainer.iters_per_epoch": "5"})
    spec.preset = "smoke"
    opts = SlurmOptions(time=1, signal_delay_s=35, max_timeouts=20)  # a warning every 25 s of each attempt
    (job,) = submit_plan(plan_sweep(spec, out), out, opts, cluster="local", log_dir=tmp_path / "logs", threads=1)
    run_dir = Path(job.result())
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "finished" and manifest["resumed"], manifest.get("resumed")
    assert len(list(out.rglob("manifest.json"))) == 1
