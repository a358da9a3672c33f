"""``ssl-bench data {info,check,prepare}`` and data-root resolution ($SSL_BENCH_DATA/<name>)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import acdc_root, run_cli_subprocess
from test_datasets_real import ALL_PATIENTS, write_acdc_official

from ssl_bench.core.registry import DATASETS


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return write_acdc_official(tmp_path_factory.mktemp("acdc_cli"), ALL_PATIENTS, testing=("patient101",))


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    for var in ("SSL_BENCH_ACDC", "SSL_BENCH_DATA", "SSL_BENCH_PANCREAS", "SSL_BENCH_PANCREAS_3D", "SSL_BENCH_YORK"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("acdc", ["creatis.insa-lyon.fr", "CC BY-NC-SA", "Info.cfg", "protocol ssl4mis", "protocol dct"]),
        ("pancreas-ct", ["cancerimagingarchive.net", "CC BY 3.0", "labelNNNN.nii.gz", "192x240", "uses the label"]),
        ("pancreas-ct-3d", ["imageNNNN_norm.h5", "12 labelled", "uses the label", "protocol coranet"]),
        ("york-endocardium", ["cse.yorku.ca/~mridataset", "-99999", "manual_seg_32points_patN.mat", "1:4"]),
        ("cardiac-phantom", ["no download"]),
    ],
)
def test_info(cli, capsys, name, words):
    assert cli("data", "info", name) == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out, (word, out)


def test_check_ok_and_counts(cli, capsys, official):
    assert cli("data", "check", "acdc", "--data-root", official) == 0
    out = capsys.readouterr().out
    assert "patients: 100 (train 70, val 10, test 20)" in out
    assert "train        70      140     280" in out  # 2 slices per synthetic volume
    assert "spacing (z, y, x) mm: 8 x 1.6 x 1.5" in out and "OK: no problems found" in out
    assert "1 testing/ patients are present" in out


def test_check_names_bad_files(cli, capsys, official, tmp_path):
    copy = tmp_path / "acdc"
    shutil.copytree(official, copy)
    victim = copy / "database" / "training" / "patient001" / "patient001_frame01.nii.gz"
    victim.write_bytes(victim.read_bytes()[:-50])
    shutil.rmtree(copy / "database" / "training" / "patient002")
    assert cli("data", "check", "acdc", "--data-root", copy) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS (2):" in out  # the missing folder is reported once for its two frames
    assert f"{victim}: not a readable NIfTI file, truncated or corrupt" in out
    assert out.count("patient folder patient002 not found") == 1


def test_missing_dataset_gives_download_page_and_layout(cli, capsys, tmp_path, monkeypatch):
    env = {"SSL_BENCH_DATA": str(tmp_path / "nothing"), "SSL_BENCH_ACDC": ""}
    proc = run_cli_subprocess("data", "check", "acdc", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Download: https://www.creatis" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Expected layout" in proc.stderr and str(tmp_path / "nothing" / "acdc") in proc.stderr
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "nothing"))
    assert cli("run", "--method", "unet", "--dataset", "york-endocardium", "--preset", "smoke") == 2
    err = capsys.readouterr().err
    assert "cse.yorku.ca" in err and "manual_seg_32points_patN.mat" in err and "york-endocardium is not a folder" in err
    monkeypatch.delenv("SSL_BENCH_DATA")
    assert cli("run", "--method", "unet", "--dataset", "pancreas-ct", "--preset", "smoke") == 2
    err = capsys.readouterr().err
    assert "needs its data folder: pass --data-root DIR or set $SSL_BENCH_PANCREAS" in err and "TCIA" in err


def test_prepare_idempotent_check_and_corruption(cli, capsys, official, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "data"))
    assert cli("data", "prepare", "acdc", "--source", official) == 0  # to $SSL_BENCH_DATA/acdc
    dest = tmp_path / "data" / "acdc"
    meta = json.loads((dest / "dataset.json").read_text())
    assert len(meta["cases"]) == 202 and meta["preprocessing"]["layout"] == "official"
    assert cli("data", "prepare", "acdc", "--source", official) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli("data", "check", "acdc") == 0  # found through $SSL_BENCH_DATA/acdc
    out = capsys.readouterr().out
    assert "layout: official" in out and "patients: 100 (train 70, val 10, test 20)" in out
    assert "data folder from $SSL_BENCH_DATA" in out
    # the runner resolves the same folder
    from ssl_bench.training.runner import build_adapter, resolve_config

    adapter = build_adapter(resolve_config("unet", "acdc", preset="smoke"))
    assert adapter.root == dest and adapter.prepared
    victim = dest / "cases" / "patient099_frame02.h5"
    victim.write_bytes(victim.read_bytes()[:-100])
    assert cli("data", "check", "acdc") == 1
    out = capsys.readouterr().out
    assert f"{victim}: content differs from dataset.json (sha256 mismatch)" in out


def test_prepare_errors(cli, capsys, official, tmp_path):
    assert cli("data", "prepare", "cardiac-phantom", "--source", official, "--data-root", tmp_path / "x") == 2
    assert "has no prepare step" in capsys.readouterr().err
    assert cli("data", "prepare", "acdc", "--source", official) == 2
    assert "pass --data-root DIR or set $SSL_BENCH_DATA" in capsys.readouterr().err
    assert cli("data", "prepare", "acdc", "--source", tmp_path / "nope", "--data-root", tmp_path / "y") == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli("data") == 2


def test_check_phantom_and_unknown(cli, capsys):
    assert cli("data", "check", "pancreas-phantom") == 0
    assert "patients: 30 (train 20, val 4, test 6)" in capsys.readouterr().out
    assert cli("data", "check", "acdcx") == 2
    assert "Did you mean 'acdc'" in capsys.readouterr().err


def test_real_acdc_check_cli(cli, capsys):
    root = acdc_root()
    assert cli("data", "check", "acdc", "--data-root", root) == 0
    out = capsys.readouterr().out
    assert "patients: 100 (train 70, val 10, test 20)" in out
    assert "train        70      140    1312" in out and "[0, 1, 2, 3]" in out


def test_all_real_datasets_registered():
    for name in ("acdc", "pancreas-ct", "pancreas-ct-3d", "york-endocardium"):
        cls = DATASETS.get(name)
        assert cls.needs_root and cls.root_env and cls.info.download.startswith("http")
