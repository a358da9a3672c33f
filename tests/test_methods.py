"""Contract check of every registered method (new methods are covered automatically)."""

from __future__ import annotations

import pytest

from ssl_bench.core.registry import METHODS
from ssl_bench.training.check import check_method


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name):
    results = check_method(name)
    failed = [f"{r.dims}D {r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed
    assert any(r.name == "state round trip" for r in results)


def test_check_catches_detached_consistency_loss(tmp_path):
    """A consistency term computed on detached outputs has zero gradient: the check must fail it."""
    from ssl_bench.core.registry import load_plugin_file

    plugin = tmp_path / "detached.py"
    plugin.write_text('''
import torch
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.supervised import Supervised

@METHODS.register("detached-consistency")
class Detached(Supervised):
    """Buggy: the unsupervised term is computed from detached student outputs."""
    uses_unlabeled = True

    def training_step(self, batch_l, batch_u, step):
        out = super().training_step(batch_l, batch_u, step)
        if batch_u is not None:
            p = self.student(batch_u.image).softmax(1).detach()
            q = self.student(batch_u.image).softmax(1).detach()
            out["unsup/consistency"] = ((p - q) ** 2).mean().requires_grad_()
            out["loss"] = out["loss"] + out["unsup/consistency"]
        return out
''')
    load_plugin_file(plugin)
    results = check_method("detached-consistency", dims=(2,))
    grad = [r for r in results if r.name == "gradient unsup/consistency"]
    assert grad and not grad[0].ok and "|grad| = 0" in grad[0].detail


def test_check_requires_unsup_terms_for_ssl_methods(tmp_path):
    from ssl_bench.core.registry import load_plugin_file

    plugin = tmp_path / "no_unsup.py"
    plugin.write_text('''
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.supervised import Supervised

@METHODS.register("ssl-without-unsup")
class NoUnsup(Supervised):
    """Claims to use unlabelled data but returns no unsupervised term."""
    uses_unlabeled = True
''')
    load_plugin_file(plugin)
    results = check_method("ssl-without-unsup", dims=(2,))
    assert any(r.name.startswith("unsup terms") and not r.ok for r in results)


@pytest.mark.parametrize("backbone", ["vnet", "resnet18-3d"])
@pytest.mark.parametrize("name", ["coranet", "mean-teacher", "ua-mt"])
def test_3d_methods_pass_the_contract_on_each_3d_backbone(name, backbone):
    results = check_method(name, backbone=backbone, dims=(3,))
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed
    assert any(r.name == "build" and backbone in r.detail for r in results)
