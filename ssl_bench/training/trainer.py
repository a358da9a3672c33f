"""The one training loop: two seeded streams, stages, validation, atomic checkpoints, exact resume.

Determinism: at every step the global torch RNG and the augmentation generator are re-seeded from
``(seed, step)``, and the streams are functions of ``(seed, pass)``; a run resumed from ``checkpoints/last.pt``
therefore reproduces an uninterrupted run exactly on the CPU.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ssl_bench.core.config import RunConfig, to_dict
from ssl_bench.core.data import Case, DatasetAdapter
from ssl_bench.core.distributed import barrier
from ssl_bench.core.errors import ConfigError, DataError, RunDirError, TrainingError
from ssl_bench.core.io import atomic_torch_save, atomic_write_text
from ssl_bench.core.method import Batch, EpochData, Method, Stage, StepInfo
from ssl_bench.core.transforms import prepare_slices
from ssl_bench.evaluation.evaluate import evaluate_cases, mean_foreground_dice, volume_predictor
from ssl_bench.training.distributed import DistributedRun
from ssl_bench.training.efficiency import Efficiency
from ssl_bench.training.loggers import RunLogs
from ssl_bench.training.streams import CropSource, Source, Stream, TensorSource, center_start, crop_or_pad, derive_seed

CHECKPOINT_VERSION = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: trainer.select: the model tested. "both" tests the best-val model (eval/test) and the last one (eval/test-last).
SELECTIONS = ("best-val", "last", "both")


@dataclass
class TrainingData:
    """The two streams' sources and who is in them.

    ``hidden_labels_u`` are the labels of the unlabelled data's fixed views (``source_u.fixed_views``), kept for
    pseudo-label quality analysis only; methods never train on them.
    """

    labelled_patients: list[str]
    unlabelled_patients: list[str]
    source_l: Source
    source_u: Source | None
    hidden_labels_u: torch.Tensor | None = field(repr=False, default=None)


def load_training_data(cfg: RunConfig, adapter: DatasetAdapter, all_labels: bool) -> TrainingData:
    """Split the training patients into labelled / unlabelled and load their data.

    2D: slices resized to ``dataset.image_size`` (``dataset.image_resize``; augmented per batch). 3D: whole
    volumes, cropped at random to ``dataset.patch_size`` per draw; unlabelled volumes either the same way
    (``dataset.unlabeled_views=random``) or as one fixed centre crop each (``center``, as the released CoraNet code).
    """
    train_cases = adapter.splits()["train"]
    if all_labels:
        lab_patients = adapter.patients("train")
    else:
        lab_patients = adapter.labelled_patients(cfg.dataset.labeled, cfg.dataset.selection, cfg.seed)
    lab_set = set(lab_patients)
    lab_cases = [c for c in train_cases if adapter.group(c) in lab_set]
    unl_cases = [c for c in train_cases if adapter.group(c) not in lab_set]
    unl_patients = [p for p in adapter.patients("train") if p not in lab_set]
    if adapter.spec.dims == 2:
        size, resize = tuple(cfg.dataset.image_size), cfg.dataset.image_resize
        labelled = adapter.training_slices(lab_cases)
        source_l = TensorSource(*prepare_slices(labelled.images, labelled.labels, size, resize), cfg.dataset.augment)
        if not unl_cases:
            return TrainingData(lab_patients, unl_patients, source_l, None)
        unlabelled = adapter.training_slices(unl_cases)
        images_u, hidden = prepare_slices(unlabelled.images, unlabelled.labels, size, resize)
        return TrainingData(
            lab_patients, unl_patients, source_l, TensorSource(images_u, None, cfg.dataset.augment), hidden
        )
    patch = tuple(cfg.dataset.patch_size)
    lab = [_labelled_case(adapter, c) for c in lab_cases]
    source_l = CropSource([c.image for c in lab], [c.label for c in lab], patch)
    if not unl_cases:
        return TrainingData(lab_patients, unl_patients, source_l, None)
    unl = [adapter.load_case(c) for c in unl_cases]
    random_views = CropSource([c.image for c in unl], [c.label for c in unl if c.label is not None] or None, patch)
    hidden = _center_labels(unl, patch)
    if cfg.dataset.unlabeled_views == "center":
        images = torch.cat([b.image for b in random_views.fixed_views(8)])
        return TrainingData(lab_patients, unl_patients, source_l, TensorSource(images, None), hidden)
    return TrainingData(lab_patients, unl_patients, source_l, random_views, hidden)


def _labelled_case(adapter: DatasetAdapter, case_id: str) -> Case:
    case = adapter.load_case(case_id)
    if case.label is None:
        raise DataError(f"labelled training case {case_id} has no label")
    return case


def _center_labels(cases: list[Case], patch: tuple[int, ...]) -> torch.Tensor | None:
    if any(c.label is None for c in cases):
        return None
    crops = [crop_or_pad(c.label, center_start(c.label.shape, patch), patch) for c in cases]  # type: ignore[arg-type]
    return torch.from_numpy(np.stack(crops))


def logged_train_seconds(metrics_path: Path) -> float:
    """Training seconds told by a run's ``metrics.jsonl``: the largest ``time`` of each segment, summed.

    Logs written before the time was counted over resumes restart ``time`` at 0 in every resumed segment (a segment
    ends where the time decreases); in newer logs the time never decreases and this is the last line's time.
    0.0 without a log."""
    if not metrics_path.exists():
        return 0.0
    total, segment_max, previous = 0.0, 0.0, -math.inf
    for line in metrics_path.read_text().splitlines():
        try:
            t = json.loads(line).get("time")
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if not isinstance(t, (int, float)):
            continue
        if t < previous:  # a resumed segment starts
            total, segment_max = total + segment_max, 0.0
        segment_max, previous = max(segment_max, float(t)), float(t)
    return total + segment_max


class StopRequested(Exception):
    """SIGTERM/SIGINT received: a checkpoint was written; ``ssl-bench resume`` continues."""


class Trainer:
    """Runs a method's stages on a dataset, writing into ``run_dir`` (see :mod:`ssl_bench.training.rundir`)."""

    def __init__(
        self,
        cfg: RunConfig,
        method: Method,
        adapter: DatasetAdapter,
        run_dir: Path,
        device: torch.device,
        progress: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.method = method.to(device)
        self.dist = DistributedRun((cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size))  # torchrun: N ranks
        self.dist.prepare(self.method, device)
        self.adapter = adapter
        self.run_dir = run_dir
        self.device = device
        self.progress = progress
        self.data = load_training_data(cfg, adapter, type(method).uses_all_labels)
        tc = cfg.trainer
        self.stream_l = Stream("labelled", self.data.source_l, tc.batch_size, cfg.seed)
        self.stream_u = None
        if self.data.source_u is not None and type(method).uses_unlabeled:
            self.stream_u = Stream("unlabelled", self.data.source_u, tc.unlabeled_batch_size, cfg.seed, labelled=False)
        self.stages = method.stages()
        self.steps_per_epoch = [self._steps_per_epoch(s) for s in self.stages]
        self.total_steps = sum(s.epochs * n for s, n in zip(self.stages, self.steps_per_epoch))
        if self.total_steps <= 0:
            raise TrainingError("the schedule has no steps: check trainer.epochs and the method's stages")
        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler()
        self.perf = Efficiency(tc, device)  # AMP, channels-last, cudnn.benchmark, pinned batches
        self.perf.prepare_model(self.method)
        self.scaler = self.perf.scaler
        # position (the next step to run)
        self.step = 0
        self.stage_index = 0
        self.epoch_in_stage = 0
        self.iter_in_epoch = 0
        self.best_score = -math.inf
        self.best_step = -1
        self.history: list[dict[str, Any]] = []
        self._seconds_before = 0.0  # wall seconds of fit() in earlier segments, up to the loaded checkpoint
        self._segment_start: float | None = None  # time.time() when this fit() began; None outside fit()
        self._stop = False
        self.run_logs: RunLogs | None = None  # train.log and trainer.loggers, open while fit() runs
        self._signal = False  # a SIGTERM/SIGINT arrived; all ranks agree on stopping in reduce_values

    @property
    def train_seconds(self) -> float:
        """Wall seconds of training up to the current position, summed over the run's segments (resumes).

        Work done after a killed segment's last checkpoint is not counted there; it is counted when redone."""
        running = 0.0 if self._segment_start is None else time.time() - self._segment_start
        return self._seconds_before + running

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    # -- construction helpers -------------------------------------------------------------------------------------

    def _steps_per_epoch(self, stage: Stage) -> int:
        if stage.iters_per_epoch:
            return int(stage.iters_per_epoch)
        if self.cfg.trainer.iters_per_epoch:
            return int(self.cfg.trainer.iters_per_epoch)
        drive = self.stream_u if (stage.unlabeled and self.stream_u is not None) else self.stream_l
        return max(1, math.ceil(len(drive) / drive.batch_size))

    def _build_optimizer(self) -> torch.optim.Optimizer:
        oc = self.cfg.optim
        params = list(self.method.trainable_parameters())
        if oc.name == "adam":
            return torch.optim.Adam(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)
        if oc.name == "adamw":
            return torch.optim.AdamW(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)
        if oc.name == "sgd":
            return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)
        raise TrainingError(f"unknown optimiser {oc.name!r}: use adam, adamw or sgd")

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        kind, total = self.cfg.optim.schedule, self.total_steps
        if kind == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        if kind == "poly":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: max(0.0, 1 - s / total) ** 0.9)
        raise TrainingError(f"unknown lr schedule {kind!r}: use 'constant' or 'poly'")

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format_version": CHECKPOINT_VERSION,
            "method": self.cfg.method,
            "config": to_dict(self.cfg),
            "position": {
                "step": self.step,
                "stage_index": self.stage_index,
                "epoch_in_stage": self.epoch_in_stage,
                "iter_in_epoch": self.iter_in_epoch,
            },
            "model": self.method.state_dict(),
            "extra_state": self.method.extra_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "streams": {
                "labelled": self.stream_l.state_dict(),
                "unlabelled": None if self.stream_u is None else self.stream_u.state_dict(),
            },
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "best": {"score": self.best_score, "step": self.best_step},
            "history": self.history,
            "train_seconds": self.train_seconds,
        }

    def save_checkpoint(self) -> Path:
        path = self.ckpt_dir / "last.pt"
        atomic_torch_save(self.state_dict(), path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - corrupt/truncated file
            raise RunDirError(f"cannot read checkpoint {path}: {exc}") from exc
        if state.get("format_version") != CHECKPOINT_VERSION:
            raise RunDirError(
                f"checkpoint {path} has format {state.get('format_version')}, expected {CHECKPOINT_VERSION}"
            )
        self.method.load_state_dict(state["model"])
        self.method.load_extra_state(state["extra_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.stream_l.load_state_dict(state["streams"]["labelled"])
        if self.stream_u is not None and state["streams"]["unlabelled"] is not None:
            self.stream_u.load_state_dict(state["streams"]["unlabelled"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        pos = state["position"]
        self.step, self.stage_index = pos["step"], pos["stage_index"]
        self.epoch_in_stage, self.iter_in_epoch = pos["epoch_in_stage"], pos["iter_in_epoch"]
        self.best_score, self.best_step = state["best"]["score"], state["best"]["step"]
        self.history = state["history"]
        self._truncate_metrics_log()
        # checkpoints written before train_seconds was stored: the kept log lines' times, one sum per segment
        stored = state.get("train_seconds")
        self._seconds_before = float(stored) if stored is not None else logged_train_seconds(self.metrics_path)

    def _truncate_metrics_log(self) -> None:
        """Drop log lines written after the checkpoint (they will be written again)."""
        if not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            kind, step = rec.get("type"), rec.get("step", 0)
            # epoch records at the checkpoint's step exist only if the checkpoint was written after the epoch end
            epoch_done = kind == "epoch" and (step < self.step or (step == self.step and self.iter_in_epoch == 0))
            if (kind == "train" and step <= self.step) or epoch_done or rec in self.history:
                keep.append(line)
        atomic_write_text(self.metrics_path, "".join(k + "\n" for k in keep))

    # -- logging --------------------------------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.rank:
            return
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.run_logs is not None:
            self.run_logs.write(record)

    # -- loop -----------------------------------------------------------------------------------------------------

    def _step_info(self) -> StepInfo:
        stage = self.stages[self.stage_index]
        spe = self.steps_per_epoch[self.stage_index]
        epochs_before = sum(s.epochs for s in self.stages[: self.stage_index])
        return StepInfo(
            step=self.step,
            epoch=epochs_before + self.epoch_in_stage,
            stage=stage.name,
            stage_step=self.epoch_in_stage * spe + self.iter_in_epoch,
            stage_steps=stage.epochs * spe,
            total_steps=self.total_steps,
            steps_per_epoch=spe,
        )

    def _train_step(self, stage: Stage) -> dict[str, float]:
        info = self._step_info()
        torch.manual_seed(derive_seed(self.cfg.seed, "step", self.step, *self.dist.seed_parts))
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "augment", self.step))
        batch_l = self.perf.to_device(self.dist.local(self.stream_l.next(gen)))  # this rank's shard of the batch
        batch_u = None
        if stage.unlabeled and self.stream_u is not None:
            batch_u = self.perf.to_device(self.dist.local(self.stream_u.next(gen)))
        self.method.train()
        if info.stage_step == 0:
            self.method.on_stage_start(stage, info)
        with self.perf.autocast():
            losses = self.method.training_step(batch_l, batch_u, info)
        if "loss" not in losses:
            raise TrainingError(f"{type(self.method).__name__}.training_step must return a dict with key 'loss'")
        loss = losses["loss"]
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
        if not math.isfinite(values["loss"]) and self.cfg.trainer.stop_on_nan:
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            last = self.ckpt_dir / "last.pt"
            saved = f" The last good checkpoint is {last}." if last.exists() else ""
            raise TrainingError(
                f"non-finite loss at step {self.step} (stage {stage.name}): {bad}.{saved} Try a lower learning rate "
                "(--set optim.lr=...), gradient clipping (--set optim.grad_clip=1.0), or check the input data for NaN."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.dist.sync_gradients(self.method.trainable_parameters())
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.trainable_parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.method.after_optimizer_step(info)
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        values, self._stop = self.dist.reduce_values(values, self._signal)
        return values

    def _iterate_unlabelled(self, batch_size: int) -> Iterator[Batch]:
        if self.data.source_u is not None:
            for batch in self.data.source_u.fixed_views(batch_size):
                yield batch.to(self.device)

    def validate(self) -> float:
        """Mean foreground Dice on the val split (Dice only, for speed); NaN if there is no val split."""
        val_cases = self.adapter.splits().get("val", [])
        if self.cfg.eval.val_cases:
            val_cases = val_cases[: self.cfg.eval.val_cases]
        if not val_cases:
            return math.nan
        self.method.eval()
        dims, data = self.adapter.spec.dims, self.cfg.dataset
        predictor = volume_predictor(
            self.method.predict, dims, self.cfg.eval, tuple(data.image_size), self.device, data.image_resize
        )
        rows = evaluate_cases(predictor, self.adapter, val_cases, backend="ssl-bench", metrics=("dice",))
        return mean_foreground_dice(rows)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = True

    def fit(self) -> None:
        """Train from the current position to the end of the last stage."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self._segment_start = time.time()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"{self.cfg.method}",
            unit="step",
            disable=True if self.dist.rank else (not self.progress if self.progress is not None else None),
            dynamic_ncols=True,
        )
        try:
            if not self.dist.rank:  # rank 0 alone writes the run folder's logs
                if self.step == 0 and self.metrics_path.exists():
                    self._truncate_metrics_log()  # a restart killed before its first checkpoint: drop its lines
                self.run_logs = RunLogs.open(
                    self.run_dir,
                    self.cfg.trainer.loggers,
                    self.step,
                    self.total_steps,
                    config=to_dict(self.cfg),
                    bar=bar,
                )
            while self.stage_index < len(self.stages):
                stage = self.stages[self.stage_index]
                spe = self.steps_per_epoch[self.stage_index]
                while self.epoch_in_stage < stage.epochs:
                    while self.iter_in_epoch < spe:
                        values = self._train_step(stage)
                        self.step += 1
                        self.iter_in_epoch += 1
                        bar.update(1)
                        if self.step % self.cfg.trainer.log_every == 0 or self.step == self.total_steps:
                            bar.set_postfix(stage=stage.name, loss=f"{values['loss']:.4f}")
                            info = self._step_info()
                            self._log(
                                {
                                    "type": "train",
                                    "step": self.step,
                                    "epoch": info.epoch,
                                    "stage": stage.name,
                                    "time": round(self.train_seconds, 3),  # counted over resumes
                                    **values,
                                }
                            )
                        if self._stop:
                            self.save_checkpoint()
                            raise StopRequested(f"stopped at step {self.step}")
                        if self.step % self.cfg.trainer.ckpt_every == 0:
                            self.save_checkpoint()
                    self._end_epoch(stage, bar)
                self.stage_index += 1
                self.epoch_in_stage = 0
            self.save_checkpoint()
            barrier()  # rank 0's checkpoints are on disk before any rank loads best.pt
        finally:
            self._seconds_before, self._segment_start = self.train_seconds, None
            bar.close()
            if self.run_logs is not None:
                self.run_logs.close()
                self.run_logs = None
            for s, handler in old.items():
                signal.signal(s, handler)

    def _end_epoch(self, stage: Stage, bar: Any) -> None:
        info = self._step_info()
        n_u = 0 if self.data.source_u is None else len(self.data.source_u)
        data = EpochData(self._iterate_unlabelled, n_u, self.device, self.data.hidden_labels_u)
        logged = self.method.on_epoch_end(info.epoch, stage, data)
        if logged:
            self._log({"type": "epoch", "step": self.step, "epoch": info.epoch + 1, "stage": stage.name, **logged})
        self.epoch_in_stage += 1
        self.iter_in_epoch = 0
        last_epoch = self.stage_index == len(self.stages) - 1 and self.epoch_in_stage == stage.epochs
        every = self.cfg.trainer.val_every
        if every and (self.epoch_in_stage % every == 0 or last_epoch):
            score = self.validate()
            record = {
                "type": "val",
                "step": self.step,
                "epoch": info.epoch + 1,
                "stage": stage.name,
                "val_dice_fg": score,
            }
            self.history.append(record)
            self._log(record)
            bar.set_postfix(stage=stage.name, val_dice=f"{score:.4f}")
            if not math.isnan(score) and score > self.best_score:
                self.best_score, self.best_step = score, self.step
                atomic_torch_save(
                    {"model": self.method.state_dict(), "step": self.step, "val_dice_fg": score},
                    self.ckpt_dir / "best.pt",
                )
        self.save_checkpoint()

    # -- final model ----------------------------------------------------------------------------------------------

    def select_final_model(self) -> str:
        """Load the model to test: best validation checkpoint (``select=best-val``, and the primary model of
        ``select=both``) or the last one."""
        best = self.ckpt_dir / "best.pt"
        if self.cfg.trainer.select in ("best-val", "both") and best.exists():
            state = torch.load(best, map_location=self.device, weights_only=False)
            self.method.load_state_dict(state["model"])
            return f"best-val (step {state['step']}, val Dice {state['val_dice_fg']:.4f})"
        if self.cfg.trainer.select not in SELECTIONS:
            raise ConfigError(f"trainer.select must be one of {SELECTIONS}, got {self.cfg.trainer.select!r}")
        return f"last (step {self.step})"
