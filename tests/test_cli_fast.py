"""The fast paths of the CLI: `--help`, `--version` and `list` import no torch, `list` matches substrings and
globs, and the static table of built-in names that `list` reads equals the real registry."""

from __future__ import annotations

import subprocess
import sys

from helpers import run_cli_subprocess

from ssl_bench.cli.listing import builtin_names, registry_names
from ssl_bench.cli.main import main
from ssl_bench.core.registry import METHODS, name_matches


def test_builtin_name_table_equals_the_registry():
    # regenerate with `python -m ssl_bench.cli.listing` when a built-in is added, renamed or re-described
    assert builtin_names() == registry_names()


def _modules_after(*argvs: list[str]) -> set[str]:
    """Modules loaded in a fresh interpreter after running ``main(argv)`` for each argv."""
    code = (
        "import sys\nfrom ssl_bench.cli.main import main\n"
        f"for argv in {list(argvs)!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_version_and_list_import_no_torch():
    loaded = _modules_after(
        ["--help"],
        ["--version"],
        ["run", "--help"],
        ["check", "--help"],
        ["figure", "--help"],
        ["list", "methods", "mean"],
        ["list", "tables"],
    )
    assert "ssl_bench.cli.main" in loaded
    assert not {"torch", "pandas", "matplotlib", "scipy"} & loaded


def test_check_help_still_shows_the_contract(capsys):
    import ssl_bench.training.check as check

    try:
        main(["check", "--help"])
    except SystemExit:
        pass
    first = (check.__doc__ or "").strip().splitlines()[0]
    assert first and first in capsys.readouterr().out


def test_list_takes_a_substring_or_a_glob(capsys):
    assert main(["list", "methods", "mean"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["mean-teacher"]
    assert main(["list", "methods", "coranet-seg*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names and all(n.startswith("coranet-seg") for n in names) and "coranet" not in names
    assert main(["list", "methods", "no-such-thing"]) == 0
    assert "no methods registered matching 'no-such-thing'" in capsys.readouterr().out


def test_registry_names_match_like_list():
    assert "mean-teacher" in METHODS.names("mean")
    assert METHODS.names("Mean_Teacher") == ["mean-teacher"]
    assert METHODS.names("mean*") == ["mean-teacher"]
    assert name_matches("ua-mt", "ua") and not name_matches("ua-mt", "ua?")
    assert name_matches("anything", None)


def test_list_with_a_plugin_uses_the_registry(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from ssl_bench import METHODS\n"
        "from ssl_bench.methods.supervised import UNetBaseline\n"
        "@METHODS.register('mean-of-mine')\n"
        "class Mine(UNetBaseline):\n"
        '    """A plugin method."""\n'
    )
    proc = run_cli_subprocess("list", "methods", "mean", "--plugin", plugin)  # a fresh registry
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["mean-of-mine", "mean-teacher"]
