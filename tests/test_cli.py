"""The command line: help, list, dry run, one-line errors without tracebacks, plugins via --plugin."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli_subprocess

from ssl_bench.cli.main import main


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for text in ("--method", "--labeled", "presets (", "smoke", "paper", "--set KEY=VALUE", "run folder"):
        assert text in out


def test_help_states_the_presets_values():
    """The preset lines of `run --help` are generated from the presets, and ACDC's own line equals its preset."""
    from ssl_bench.cli.main import ACDC_CPU, run_epilog
    from ssl_bench.core.config import PRESETS, describe_preset
    from ssl_bench.core.registry import DATASETS, discover

    discover()
    assert describe_preset(DATASETS.get("acdc").presets["cpu"]) == ACDC_CPU
    text = run_epilog()
    assert "96x96, width 16, 10 epochs x 40 steps, batch 8+8" in text  # cpu, from PRESETS
    assert all(describe_preset(values) in text for values in PRESETS.values())
    assert "acdc cpu = " + ACDC_CPU in text and "%%" not in text


def test_list_methods(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "unet" in out and "fully-supervised" in out


def test_dry_run_prints_resolved_config(capsys):
    assert (
        main(
            [
                "run",
                "--method",
                "unet",
                "--dataset",
                "cardiac-phantom",
                "--preset",
                "smoke",
                "--labeled",
                "3",
                "--set",
                "trainer.epochs=4",
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "epochs: 4" in out and "labeled: 3" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--method", "unett"], "error: unknown method 'unett'. Did you mean 'unet'"),
        (["run", "--method", "unet", "--dataset", "acdcc"], "error: unknown dataset 'acdcc'. Did you mean 'acdc'"),
        (["run", "--method", "unet", "--backbone", "unet9d"], "error: unknown backbone 'unet9d'"),
        (["run", "--method", "unet", "--set", "trainer.epoch=1"], "error: unknown config key 'trainer.epoch'"),
        (["run", "--method", "unet", "--dataset", "acdc", "--data-root", "/no/such/dir"], "error: ACDC root"),
        (["run", "--method", "unet", "--plugin", "/no/such/plugin.py"], "error: plugin file not found"),
        (["resume", "/no/such/run"], "error: run folder not found"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message, tmp_path):
    proc = run_cli_subprocess(
        *args, "--out" if args[0] == "run" else "--no-progress", *([str(tmp_path)] if args[0] == "run" else [])
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("manifest.json"))


TOY = '''
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.supervised import Supervised

@METHODS.register("toy-cli-method")
class ToyCli(Supervised):
    """Toy method from a --plugin file."""
'''


def test_plugin_method_runs_end_to_end(tmp_path):
    plugin = tmp_path / "toy_cli.py"
    plugin.write_text(TOY)
    listed = run_cli_subprocess("list", "methods", "--plugin", plugin)
    assert "toy-cli-method" in listed.stdout
    checked = run_cli_subprocess("check", "--method", "toy-cli-method", "--plugin", plugin, "--dims", "2")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 failed" in checked.stdout
    proc = run_cli_subprocess(
        "run",
        "--method",
        "toy-cli-method",
        "--preset",
        "smoke",
        "--plugin",
        plugin,
        "--out",
        tmp_path / "runs",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    (manifest_path,) = (tmp_path / "runs").rglob("manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "finished"
    (name,) = manifest["plugins"]
    assert (manifest_path.parent / "plugins" / name).read_text() == TOY  # copied for resume/eval
    # eval reloads the plugin from the run folder (no --plugin needed)
    again = run_cli_subprocess("eval", manifest_path.parent, "--no-progress")
    assert again.returncode == 0, again.stderr


def test_duplicate_plugin_name_is_a_one_line_error(tmp_path):
    plugin = tmp_path / "dup.py"
    plugin.write_text(TOY.replace("toy-cli-method", "unet"))
    proc = run_cli_subprocess("list", "methods", "--plugin", plugin)
    assert proc.returncode == 2 and "duplicate method name 'unet'" in proc.stderr and "Traceback" not in proc.stderr


def test_metrics_command_scores_files(tmp_path, capsys):
    import numpy as np

    ref = np.zeros((4, 16, 16), np.uint8)
    ref[1:3, 4:10, 4:10] = 1
    pred = np.roll(ref, 1, axis=2)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "pred.npy", pred)
    assert (
        main(
            [
                "metrics",
                str(tmp_path / "pred.npy"),
                str(tmp_path / "ref.npy"),
                "--classes",
                "1",
                "--spacing",
                "2",
                "1",
                "1",
                "--json",
            ]
        )
        == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert row["dice"] == pytest.approx(2 * 60 / 144)  # 6x6x2 boxes shifted by one column: overlap 5x6x2
    assert row["hd"] == pytest.approx(1.0)
    proc = run_cli_subprocess("metrics", tmp_path / "pred.npy", tmp_path / "missing.npy")
    assert proc.returncode == 2 and "missing.npy" in proc.stderr and "Traceback" not in proc.stderr
