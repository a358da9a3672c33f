"""Registry: names, duplicates, unknown names, plugin files, built-in module list."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_bench.core import registry
from ssl_bench.core.errors import PluginError, RegistryError
from ssl_bench.core.registry import BACKBONES, DATASETS, METHODS, Registry, load_plugin_file, normalize_name

REPO = Path(__file__).resolve().parents[1]


def test_normalize_name():
    assert normalize_name("Mean_Teacher") == "mean-teacher"
    assert normalize_name(" UA MT ") == "ua-mt"


def test_lookup_normalises_case_and_underscores():
    assert METHODS.get("UNet") is METHODS.get("unet")
    assert METHODS.get("Fully_Supervised") is METHODS.get("fully-supervised")


def test_duplicate_name_raises_naming_both_sources():
    reg: Registry = Registry("thing")

    @reg.register("alpha")
    class A:  # noqa: D401
        """First."""

    with pytest.raises(
        RegistryError, match=r"duplicate thing name 'alpha'.*already registered by module .*test_registry"
    ):

        @reg.register("Alpha")
        class B:
            pass


def test_unknown_name_suggests_close_matches():
    with pytest.raises(
        RegistryError, match=r"unknown method 'unett'.*Did you mean 'unet'.*ssl-bench list methods.*--plugin"
    ):
        METHODS.get("unett")


def test_invalid_name_rejected():
    with pytest.raises(RegistryError, match="kebab-case"):
        Registry("x").register("bad/name")


def test_builtin_module_list_is_complete():
    """Every plugin file in methods/, datasets/ and ssl_bench/nets/ is imported by discovery (no silent misses)."""
    expected = set()
    for folder, package in (
        ("methods", "ssl_bench.methods"),
        ("datasets", "ssl_bench.datasets"),
        ("ssl_bench/nets", "ssl_bench.nets"),
    ):
        for path in (REPO / folder).glob("*.py"):
            if path.stem not in ("__init__", "base"):
                expected.add(f"{package}.{path.stem}")
    assert expected <= set(registry.BUILTIN_MODULES), sorted(expected - set(registry.BUILTIN_MODULES))


#: the methods 2023-2026 ACDC papers compare against (issue #14), besides the CoraNet paper's baselines
FIELD_METHODS = {"fixmatch", "unimatch", "cps", "bcp", "abd", "urpc", "mc-net", "mc-net-plus", "ict", "entropy-min"}
PAPER_METHODS = {"unet", "fully-supervised", "coranet", "pi-model", "temporal-ensembling", "mean-teacher", "ua-mt"}
PAPER_METHODS |= {"pseudo-label", "vat"}


def test_every_method_of_the_field_is_registered_and_listed_in_the_readme():
    readme = (REPO / "README.md").read_text()
    methods_row = next(line for line in readme.splitlines() if line.startswith("| methods |"))
    for name in FIELD_METHODS | PAPER_METHODS:
        assert name in METHODS.names(), name
        assert f"`{name}`" in methods_row, name


def test_registries_are_populated():
    assert {"unet", "fully-supervised"} <= set(METHODS.names())
    assert {"cardiac-phantom", "pancreas-phantom", "acdc"} <= set(DATASETS.names())
    assert {"unet2d", "unet3d", "smp-resnet34"} <= set(BACKBONES.names())
    assert METHODS.names("fully*") == ["fully-supervised"]


PLUGIN = '''
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.supervised import Supervised

@METHODS.register("{name}")
class Toy(Supervised):
    """A toy plugin method."""
'''


def test_plugin_file_registers_and_is_hashed(tmp_path):
    path = tmp_path / "toy_plugin.py"
    path.write_text(PLUGIN.format(name="toy-plugin-a"))
    digest = load_plugin_file(path)
    assert len(digest) == 64
    assert "toy-plugin-a" in METHODS
    assert "plugin file" in METHODS.entry("toy-plugin-a").source
    assert load_plugin_file(path) == digest  # idempotent


def test_plugin_duplicate_name_is_an_error(tmp_path):
    path = tmp_path / "dup_plugin.py"
    path.write_text(PLUGIN.format(name="unet"))
    with pytest.raises(RegistryError, match=r"dup_plugin.py: duplicate method name 'unet'"):
        load_plugin_file(path)


def test_plugin_import_error_is_reported(tmp_path):
    path = tmp_path / "broken_plugin.py"
    path.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(PluginError, match=r"broken_plugin.py failed to import: ModuleNotFoundError"):
        load_plugin_file(path)
    with pytest.raises(PluginError, match="plugin file not found"):
        load_plugin_file(tmp_path / "missing.py")
