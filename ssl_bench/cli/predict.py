"""``ssl-bench predict RUN_DIR -i INPUT -o OUTPUT``: label maps from a trained run, for any images.

The run's own code (plugin copies), config and checkpoint are reloaded; 2D methods predict batches of slices
(resized to the training size and back, as in evaluation), 3D methods use sliding windows (``eval.patch_size``,
``eval.stride``, ``eval.blend``). Every input is checked (format, shape, channels) before the first prediction.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_bench.core.errors import DataError, RunDirError

if TYPE_CHECKING:  # numpy and torch are imported when a prediction runs, not for `ssl-bench --help`
    import numpy as np

DESCRIPTION = """\
Predict label maps with a trained run (its val-selected model checkpoints/best.pt, or --model last).

Inputs (-i): a NIfTI (.nii, .nii.gz) or SSL4MIS HDF5 (.h5, dataset 'image') file, or a folder of them
(not recursive); or --split test|val|train of the run's dataset. Intensities are min-max normalised per
volume to [0, 1] as the dataset loaders do (after the dataset's HU window, for the pancreas datasets;
--no-normalize for images already prepared); NIfTI volumes (x, y, z) are read as (z, y, x) slices.
Outputs (-o, a folder): one label map per input under the input's file name and in its format and geometry:
NIfTI with the input's affine and header (uint8), HDF5 with a dataset 'label' (a --split writes
<case>.h5 with 'label' and a 'spacing' attribute, and --save-references DIR the reference labels alike).
--save-probabilities adds the class probabilities: dataset 'probabilities' [K, ...] in the HDF5, or
<name>.npz beside a NIfTI (array 'probabilities', [K, *label shape]).
"""

EPILOG = """\
examples:
  ssl-bench predict RUN -i images/ -o preds/ && ssl-bench metrics preds/ labels/
  ssl-bench predict RUN -i $SSL_BENCH_ACDC/data -o preds/ && ssl-bench metrics preds/ $SSL_BENCH_ACDC/data
  ssl-bench predict RUN --split test -o preds/ --save-references refs/ && ssl-bench metrics preds/ refs/
"""


def add_predict_parser(
    sub: argparse._SubParsersAction, plugin: argparse.ArgumentParser, runtime: argparse.ArgumentParser
) -> None:
    """Register the ``predict`` sub-command."""
    p = sub.add_parser(
        "predict",
        parents=[plugin, runtime],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write label maps of images (NIfTI, HDF5) or a dataset split with a trained run",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder (printed by `ssl-bench run`)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-i", "--input", type=Path, default=None, help="image file or folder of image files")
    source.add_argument("--split", default=None, choices=["train", "val", "test"], help="a split of the dataset")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    p.add_argument(
        "--model", default="best", choices=["best", "last"], help="best: checkpoints/best.pt (default); last"
    )
    p.add_argument("--save-probabilities", action="store_true", help="also write the class probabilities")
    p.add_argument("--save-references", type=Path, default=None, metavar="DIR", help="with --split: reference labels")
    p.add_argument("--no-normalize", action="store_true", help="use file intensities as stored")
    p.add_argument("--batch-size", type=int, default=None, help="slices / windows per forward (default eval's)")
    p.add_argument("--data-root", default=None, help="with --split: the dataset folder (default: the run's)")


@dataclass
class Job:
    """One volume to predict: ``load()`` -> ``(Z, Y, X)`` float32 image; ``save(label, probs)`` writes it."""

    name: str
    load: Callable[[], np.ndarray]
    save: Callable[[np.ndarray, np.ndarray | None], Path]


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    if args.batch_size is not None and args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.save_references is not None and args.split is None:
        raise DataError("--save-references needs --split (file inputs have their own references)")
    model, label = load_model(args.run_dir, args.model, args.device, args.batch_size)
    output = _output_folder(args.output, args.input)
    jobs = _split_jobs(model, args) if args.split else _file_jobs(model, args.input, output, not args.no_normalize)
    output.mkdir(parents=True, exist_ok=True)
    predict = model.probabilities if args.save_probabilities else model.labels
    for job in tqdm(jobs, desc="predict", unit="case", disable=True if args.no_progress else None):
        result = predict(job.load())
        if args.save_probabilities:
            job.save(result.argmax(0).astype("uint8"), result)
        else:
            job.save(result, None)
    print(f"wrote {len(jobs)} label map(s) to {output} (model: {label})")
    if args.save_references is not None:
        print(f"references: {args.save_references}; score with: ssl-bench metrics {output} {args.save_references}")
    return 0


@dataclass
class Model:
    """A run's method in eval mode, with its dataset's class and the predictors of its evaluation settings."""

    cfg: Any
    dataset_cls: Any
    labels: Callable[[np.ndarray], np.ndarray]
    probabilities: Callable[[np.ndarray], np.ndarray]


def load_model(run_dir: Path, which: str, device: str, batch_size: int | None) -> tuple[Model, str]:
    """Reload ``run_dir``'s method with ``checkpoints/best.pt`` (``which="best"``) or ``last.pt``."""
    import torch

    from ssl_bench.core.registry import DATASETS
    from ssl_bench.evaluation.evaluate import volume_predictor, volume_probabilities
    from ssl_bench.training.runner import build_method, load_run, pick_device

    cfg, _ = load_run(run_dir, training=False)
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        hint = (
            "it has not validated yet (trainer.val_every=0, or killed before its first validation); use --model last"
            if which == "best"
            else "the run has not saved a checkpoint yet"
        )
        raise RunDirError(f"{path} does not exist: {hint}")
    dev = pick_device(device)
    dataset_cls = DATASETS.get(cfg.dataset.name)
    method = build_method(cfg, dataset_cls).to(dev)  # needs only the dataset's TaskSpec, not its data
    try:
        state = torch.load(path, map_location=dev, weights_only=False)
        method.load_state_dict(state["model"])
    except Exception as exc:  # noqa: BLE001 - corrupt file or another run's checkpoint
        raise RunDirError(f"cannot load {path} into the run's {cfg.method!r}: {type(exc).__name__}: {exc}") from exc
    method.eval()
    if batch_size is not None:
        cfg.eval.batch_size = batch_size
    step = state.get("step", state.get("position", {}).get("step"))
    dice = f", val Dice {state['val_dice_fg']:.4f}" if "val_dice_fg" in state else ""
    args = (method.predict, dataset_cls.spec.dims, cfg.eval, tuple(cfg.dataset.image_size), dev)
    labels = volume_predictor(*args, cfg.dataset.image_resize)
    probabilities = volume_probabilities(*args, cfg.dataset.image_resize)
    return Model(cfg, dataset_cls, labels, probabilities), f"{path.name} (step {step}{dice})"


def _output_folder(output: Path, source: Path | None) -> Path:
    if output.exists() and not output.is_dir():
        raise DataError(f"-o {output} is a file; pass a folder for the label maps")
    if source is not None and source.exists():
        folder = source if source.is_dir() else source.parent
        if output.resolve() == folder.resolve():
            raise DataError(f"-o {output} is the input folder: predictions would overwrite the images")
    return output


def _file_jobs(model: Model, source: Path, output: Path, normalize: bool) -> list[Job]:
    from ssl_bench.evaluation.volume_io import IMAGE_EXTENSIONS, image_extension, inspect_image, read_image

    if not source.exists():
        raise DataError(f"-i {source}: no such file or folder")
    if source.is_dir():
        files = [p for p in sorted(source.iterdir()) if p.is_file() and not p.name.startswith(".")]
        files = [p for p in files if image_extension(p)]
        if not files:
            raise DataError(f"-i {source}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    else:
        files = [source]
    channels = model.dataset_cls.spec.in_channels
    infos = [inspect_image(p, channels) for p in files]  # every input checked before the first prediction
    window = getattr(model.dataset_cls, "window", None)  # the pancreas datasets' HU window

    def load(info: Any) -> np.ndarray:
        image = read_image(info)
        return _normalize(image, window) if normalize else image

    def save(info: Any, label: np.ndarray, probs: np.ndarray | None) -> Path:
        from ssl_bench.evaluation.volume_io import write_label_map

        return write_label_map(info, label, output, probs)

    return [
        Job(info.name, lambda i=info: load(i), lambda lab, pr, i=info: save(i, lab, pr))  # type: ignore[misc]
        for info in infos
    ]


def _normalize(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    import numpy as np

    from ssl_bench.datasets.common import minmax

    return minmax(np.clip(image, *window) if window else image)


def _split_jobs(model: Model, args: argparse.Namespace) -> list[Job]:
    from ssl_bench.evaluation.volume_io import write_h5_label
    from ssl_bench.training.runner import build_adapter

    cfg = model.cfg
    if args.data_root is not None:
        cfg.dataset.root = args.data_root
    adapter = build_adapter(cfg)
    cases = adapter.splits().get(args.split) or []
    if not cases:
        raise DataError(f"dataset {cfg.dataset.name!r} has no cases in split {args.split!r}")
    output, refs = args.output, args.save_references
    loaded: dict[str, Any] = {}

    def load(cid: str) -> np.ndarray:
        case = loaded[cid] = adapter.load_case(cid)
        return case.image

    def save(cid: str, label: np.ndarray, probs: np.ndarray | None) -> Path:
        case = loaded.pop(cid)
        write_h5_label(output / f"{cid}.h5", label, case.spacing, probs)
        if refs is not None and case.label is not None:
            write_h5_label(refs / f"{cid}.h5", case.label, case.spacing)
        return output / f"{cid}.h5"

    return [Job(c, lambda c=c: load(c), lambda lab, pr, c=c: save(c, lab, pr)) for c in cases]  # type: ignore[misc]
