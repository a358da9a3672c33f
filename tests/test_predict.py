"""`ssl-bench predict`: label maps of a split, of NIfTI and SSL4MIS HDF5 files, in the input's format and geometry;
`ssl-bench metrics` scores them to the run's own evaluation numbers; probabilities agree with the label maps; bad input
is one line, exit 2, before any prediction."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import acdc_root

from ssl_bench.cli.main import main
from ssl_bench.core.config import EvalConfig
from ssl_bench.core.registry import DATASETS
from ssl_bench.evaluation.evaluate import volume_predictor, volume_probabilities
from ssl_bench.evaluation.metrics_io import score_paths
from ssl_bench.training.runner import resolve_config, start_run

# an oblique, flipped affine with the phantom's voxel sizes (x, y, z) = (1.5, 1.5, 8) mm
AFFINE = np.array([[-1.5, 0.0, 0.0, 90.0], [0.0, 0.0, 8.0, -20.0], [0.0, -1.5, 0.0, 60.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    cfg = resolve_config("unet", "cardiac-phantom", preset="smoke", seed=2, overrides={"trainer.epochs": 3})
    return start_run(cfg, out=tmp_path_factory.mktemp("runs"), progress=False, echo=lambda s: None).run_dir


@pytest.fixture(scope="module")
def test_cases():
    adapter = DATASETS.get("cardiac-phantom")()
    return [adapter.load_case(c) for c in adapter.splits()["test"][:3]]


def _per_case(run: Path) -> dict[tuple[str, int], dict[str, str]]:
    with (run / "eval/test/per_case.csv").open() as fh:
        return {(r["case"], int(r["class"])): r for r in csv.DictReader(fh)}


def _assert_scores_equal_eval(rows: list[dict], run: Path, n_cases: int) -> None:
    ref = _per_case(run)
    assert len({r["case"] for r in rows}) == n_cases and len(rows) == 3 * n_cases
    for row in rows:
        want = ref[(row["case"], row["class"])]
        for key in ("dice", "hd95", "asd"):
            assert row[key] == pytest.approx(float(want[key]), abs=1e-9, nan_ok=True), (row["case"], key)


def test_split_predictions_score_to_the_runs_own_evaluation(run, tmp_path, capsys):
    preds, refs = tmp_path / "preds", tmp_path / "refs"
    rc = main(["predict", str(run), "--split", "test", "-o", str(preds), "--save-references", str(refs)])
    assert rc == 0, capsys.readouterr().err
    assert "wrote 6 label map(s)" in capsys.readouterr().out and len(list(preds.glob("*.h5"))) == 6
    with h5py.File(preds / "phantom025.h5") as fh:
        assert fh["label"].dtype == np.uint8 and tuple(fh["label"].attrs["spacing"]) == (8.0, 1.5, 1.5)
    rows = score_paths(preds, refs, classes=None)
    assert {r["spacing_unit"] for r in rows} == {"mm"}  # the spacing attribute is read back
    _assert_scores_equal_eval(rows, run, 6)
    assert main(["metrics", str(preds), str(refs), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 18


def test_nifti_folder_keeps_affine_header_and_scores_like_eval(run, test_cases, tmp_path, capsys):
    images, labels, preds = tmp_path / "images", tmp_path / "labels", tmp_path / "preds"
    images.mkdir(), labels.mkdir()
    for case in test_cases:  # (Z, Y, X) -> NIfTI (x, y, z), as the ACDC files
        nib.save(nib.Nifti1Image(np.transpose(case.image, (2, 1, 0)), AFFINE), images / f"{case.case_id}.nii.gz")
        nib.save(nib.Nifti1Image(np.transpose(case.label, (2, 1, 0)), AFFINE), labels / f"{case.case_id}.nii.gz")
    (images / "notes.txt").write_text("not an image: skipped")
    assert main(["predict", str(run), "-i", str(images), "-o", str(preds), "--save-probabilities"]) == 0
    for case in test_cases:
        src, out = nib.load(images / f"{case.case_id}.nii.gz"), nib.load(preds / f"{case.case_id}.nii.gz")
        assert out.shape == src.shape and np.array_equal(out.affine, src.affine)
        assert out.header.get_zooms() == src.header.get_zooms() and out.get_data_dtype() == np.uint8
        probs = np.load(preds / f"{case.case_id}.npz")["probabilities"]
        assert probs.shape == (4, *src.shape) and np.allclose(probs.sum(0), 1, atol=1e-5)
        assert np.array_equal(probs.argmax(0), np.asarray(out.dataobj))
    rows = score_paths(preds, labels, classes=None)
    _assert_scores_equal_eval(rows, run, 3)  # NIfTI zooms: the same mm distances as the run's evaluation


def test_ssl4mis_h5_files_and_normalisation(run, test_cases, tmp_path):
    folder, preds, split = tmp_path / "data", tmp_path / "preds", tmp_path / "split"
    folder.mkdir()
    for case in test_cases:  # SSL4MIS volumes, stored at another intensity scale: normalised back per volume
        with h5py.File(folder / f"{case.case_id}.h5", "w") as fh:
            fh["image"], fh["label"] = 800.0 * case.image + 100.0, case.label
    assert main(["predict", str(run), "-i", str(folder), "-o", str(preds), "--save-probabilities"]) == 0
    assert main(["predict", str(run), "--split", "test", "-o", str(split)]) == 0
    for case in test_cases:
        with h5py.File(preds / f"{case.case_id}.h5") as fh, h5py.File(split / f"{case.case_id}.h5") as ref:
            label, probs = fh["label"][()], fh["probabilities"][()]
            assert label.shape == case.image.shape and probs.shape == (4, *case.image.shape)
            assert np.array_equal(probs.argmax(0), label)
            agree = (label == ref["label"][()]).mean()
            assert agree > 0.999, agree  # the same volume up to float rounding of the intensity rescaling
    rows = score_paths(preds, folder, classes=None)  # the SSL4MIS files are the references themselves
    assert len(rows) == 9 and {r["spacing_unit"] for r in rows} == {"voxel"}


def test_a_single_2d_file_and_the_last_model(run, test_cases, tmp_path):
    image = test_cases[0].image[3]  # (Y, X) -> NIfTI (x, y)
    path = tmp_path / "slice.nii"
    nib.save(nib.Nifti1Image(image.T.copy(), np.diag([1.5, 1.5, 1.0, 1.0])), path)
    assert main(["predict", str(run), "-i", str(path), "-o", str(tmp_path / "out"), "--model", "last"]) == 0
    out = nib.load(tmp_path / "out" / "slice.nii")
    assert out.shape == image.T.shape and np.array_equal(out.affine, np.diag([1.5, 1.5, 1.0, 1.0]))


@pytest.mark.parametrize("dims,resize", [(2, "bilinear"), (2, "nearest"), (3, "bilinear")])
def test_probabilities_agree_with_label_maps(dims, resize):
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(1, 3, 3, padding=1).eval()
    cfg = EvalConfig(batch_size=3, patch_size=(8, 16, 16), stride=(4, 8, 8))
    image = np.random.default_rng(0).random((10, 20, 28), dtype=np.float32)
    labels = volume_predictor(conv, dims, cfg, (16, 16), "cpu", resize)(image)
    probs = volume_probabilities(conv, dims, cfg, (16, 16), "cpu", resize)(image)
    assert probs.shape == (3, *image.shape) and np.allclose(probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(probs.argmax(0), labels)


def _error(capsys, *argv: str) -> str:
    assert main(["predict", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_input_is_one_line_before_any_prediction(run, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "run folder not found" in _error(capsys, str(tmp_path / "nope"), "-i", str(tmp_path), "-o", out)
    assert "no such file or folder" in _error(capsys, str(run), "-i", str(tmp_path / "missing.nii.gz"), "-o", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in _error(capsys, str(run), "-i", str(empty), "-o", out)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.float32), np.eye(4)), four)
    assert "2 channels" in _error(capsys, str(run), "-i", str(four), "-o", out)
    bad_h5 = tmp_path / "bad.h5"
    with h5py.File(bad_h5, "w") as fh:
        fh["img"] = np.zeros((2, 8, 8))
    assert "no dataset 'image' (found ['img'])" in _error(capsys, str(run), "-i", str(bad_h5), "-o", out)
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as fh:
        fh["image"] = np.zeros(8)
    assert "expected a single-channel 2D or 3D image" in _error(capsys, str(run), "-i", str(flat), "-o", out)
    assert "would overwrite the images" in _error(capsys, str(run), "-i", str(four), "-o", str(tmp_path))
    assert "needs --split" in _error(capsys, str(run), "-i", str(four), "-o", out, "--save-references", out)
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("best.pt"))
    assert "use --model last" in _error(capsys, str(bare), "--split", "test", "-o", out)
    assert not (tmp_path / "out").exists()  # nothing was written


def test_readme_logs_and_predict_blocks_work_verbatim(tmp_path):
    """The README's Logs and Predict commands, run as written (ssl-bench -> this interpreter, /tmp -> tmp_path)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [re.search(rf"### {name}\n.*?```bash\n(.*?)```", readme, re.S) for name in ("Logs", "Predict")]
    assert all(blocks), "README has no Logs / Predict command block"
    lines = [ln for b in blocks for ln in b.group(1).splitlines() if not ln.startswith("tensorboard ")]  # a server
    script = "set -euo pipefail\n" + "\n".join(lines).replace("ssl-bench ", f"{sys.executable} -m ssl_bench ")
    script = script.replace("/tmp/", f"{tmp_path}/").replace("--preset smoke", "--preset smoke --threads 1")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "val step 6/6 (100%)" in proc.stdout and "6 case(s); distances in mm" in proc.stdout
    run = next((tmp_path / "ssl-runs").rglob("train.log")).parent
    assert (run / "scalars.csv").is_file() and list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.acdc
def test_acdc_h5_volumes_predicted_from_files_score_like_the_runs_evaluation(tmp_path):
    """Real ACDC (SSL4MIS layout): predicting the test volumes' own h5 files and scoring them against the same files
    reproduces the run's eval/test per_case.csv exactly."""
    root = acdc_root()
    cfg = resolve_config("unet", "acdc", preset="smoke", data_root=str(root), overrides={"trainer.epochs": 1})
    run = start_run(cfg, out=tmp_path / "runs", progress=False, echo=lambda s: None).run_dir
    ref = _per_case(run)
    images = tmp_path / "images"
    images.mkdir()
    cases = sorted({case for case, _ in ref})[:4]
    for case in cases:
        (images / f"{case}.h5").symlink_to(root / "data" / f"{case}.h5")
    assert main(["predict", str(run), "-i", str(images), "-o", str(tmp_path / "preds"), "--no-progress"]) == 0
    rows = score_paths(tmp_path / "preds", images, classes=None)
    assert len(rows) == 3 * len(cases)
    for row in rows:
        assert row["dice"] == pytest.approx(float(ref[(row["case"], row["class"])]["dice"]), abs=1e-12)
