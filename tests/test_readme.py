"""The README's examples work as written."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import run_cli_subprocess

from ssl_bench.cli.main import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quickstart_command_resolves(capsys):
    line = next(ln for ln in README.splitlines() if "ssl-bench run --method unet --dataset cardiac-phantom" in ln)
    args = line.split("&& ssl-bench ", 1)[1].split()
    assert main([*args, "--dry-run"]) == 0
    assert "cardiac-phantom" in capsys.readouterr().out


def test_test_command_is_what_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    block = re.search(r"Run the test suite.*?```bash\n(.*?)```", README, re.S)
    assert block, "README has no test command block"
    command = block.group(1).strip()
    assert command in ci.splitlines()


def test_plugin_example_passes_the_contract_check(tmp_path):
    code = re.search(r"```python\n(# my_method.py\n.*?)```", README, re.S)
    assert code, "README has no plugin example"
    plugin = tmp_path / "my_method.py"
    plugin.write_text(code.group(1))
    proc = run_cli_subprocess("check", "--method", "my-method", "--plugin", plugin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout
