"""The package's layers: a module never imports from a layer above its own (static imports, local ones included).

Plugins are loaded by name through the registry (``importlib``), which is the plugin mechanism, not an import arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each subpackage, lowest first. ``methods``/``datasets`` are the plugin shelves (installed as
#: ``ssl_bench.methods`` / ``ssl_bench.datasets``): they build on core, nets, evaluation and training.
LAYERS: dict[str, int] = {
    "core": 0,
    "nets": 1,
    "evaluation": 2,
    "training": 3,
    "methods": 4,
    "datasets": 4,
    "reporting": 5,
    "launch": 6,
    "cli": 7,
}

#: Folders on disk -> subpackage name.
FOLDERS = {
    **{name: ROOT / "ssl_bench" / name for name in LAYERS},
    "methods": ROOT / "methods",
    "datasets": ROOT / "datasets",
}


def imported_subpackages(path: Path) -> set[str]:
    """The ``ssl_bench.<sub>`` subpackages ``path`` imports (``import`` and ``from ... import``, at any depth)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "ssl_bench":  # from ssl_bench import core
                names = [f"ssl_bench.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "ssl_bench" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def layer_violations() -> list[str]:
    out = []
    for sub, folder in FOLDERS.items():
        if not folder.exists():
            continue
        for path in sorted(folder.rglob("*.py")):
            for target in imported_subpackages(path):
                if LAYERS[target] > LAYERS[sub]:
                    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    out.append(
                        f"{where} ({sub}, layer {LAYERS[sub]}) imports ssl_bench.{target} (layer {LAYERS[target]})"
                    )
    return out


def test_no_module_imports_a_higher_layer():
    assert layer_violations() == []


def test_every_module_lives_in_a_layer():
    """Nothing but the package's entry files sits at the top of ``ssl_bench/``: every module belongs to a layer."""
    top = sorted(p.name for p in (ROOT / "ssl_bench").glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    subpackages = {p.name for p in (ROOT / "ssl_bench").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages <= set(LAYERS), f"subpackage(s) without a layer: {sorted(subpackages - set(LAYERS))}"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself can fail: a core module importing the trainer is reported."""
    bad = tmp_path / "core" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from ssl_bench.training.trainer import Trainer\n    return Trainer\n")
    monkeypatch.setitem(FOLDERS, "core", tmp_path / "core")
    problems = layer_violations()
    assert len(problems) == 1 and "imports ssl_bench.training" in problems[0]


@pytest.mark.parametrize("limit", [650])
def test_modules_stay_small(limit):
    """No module of ``ssl_bench/`` grows past ~600 lines (split it along its seams instead)."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "ssl_bench").rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > limit} == {}


def test_public_plugin_api_resolves():
    """``from ssl_bench import ...`` gives the plugin interfaces, lazily (``import ssl_bench`` alone loads no torch)."""
    import subprocess
    import sys

    code = "import sys, ssl_bench; assert 'torch' not in sys.modules; from ssl_bench import METHODS, Method, SegNet"
    subprocess.run([sys.executable, "-c", code], check=True)
    import ssl_bench
    from ssl_bench.core.method import Method

    assert ssl_bench.Method is Method
    for name in ssl_bench.__all__:
        assert getattr(ssl_bench, name) is not None
    with pytest.raises(AttributeError):
        ssl_bench.no_such_name  # noqa: B018
