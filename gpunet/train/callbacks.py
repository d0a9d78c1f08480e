"""Lightning callbacks of a candidate's run: its learning curve, and the median stopping rule that
drops unpromising candidates early (paper §3.3.2). Both keep their state in the checkpoint, so a
resumed run has its whole curve and a pruned run stays pruned. Under DDP every rank keeps the
(rank-synced) curve, rank 0 alone writes it, and rank 0's stopping decision holds for all ranks."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from gpunet.console import PlainProgress
from gpunet.files import atomic_path, write_json

CURVE_METRIC = "val/top1"


class CurveRecorder(Callback):
    """Val top-1 after each validation, saved to `path` (JSON) for searches to read. Every rank
    records it (the metric is reduced over ranks, so the curves agree); rank 0 writes the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.curve: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.curve.append(float(trainer.callback_metrics[CURVE_METRIC]))
        if trainer.is_global_zero:
            write_json(self.path, {"metric": CURVE_METRIC, "curve": self.curve})

    def state_dict(self) -> dict[str, Any]:
        return {"curve": list(self.curve)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = list(state_dict["curve"])


def read_completed_curves(journal: Path) -> list[list[float]]:
    """Curves of the completed trials in a search's JSONL journal, where the last line of a trial
    `number` wins; a line being written by another process (or otherwise unreadable) is skipped,
    and a missing journal has none."""
    if not journal.is_file():
        return []
    latest: dict[Any, dict] = {}
    for i, line in enumerate(journal.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            latest[record.get("number", f"line {i}")] = record
    return [[float(v) for v in r["curve"]] for r in latest.values()
            if r.get("status") == "completed" and r.get("curve")]


def median_stop(curve: Sequence[float], completed: Sequence[Sequence[float]], grace_epochs: int,
                min_completed: int) -> bool:
    """The median stopping rule (Golovin et al., Vizier 2017): after `grace_epochs`, stop when the
    best value so far is below the median of the completed trials' running means at this epoch."""
    t = len(curve)
    if t <= grace_epochs or len(completed) < min_completed:
        return False
    running_means = [statistics.fmean(c[:t]) for c in completed]
    return max(curve) < statistics.median(running_means)


class MedianStopping(Callback):
    """Stops the run (status "pruned") when `median_stop` says so against the search's journal.
    Rank 0 reads the journal and decides for all ranks: ranks that read it at different moments
    could disagree, and a rank that stops alone leaves the others waiting."""

    def __init__(self, recorder: CurveRecorder, journal: Path, grace_epochs: int,
                 min_completed: int) -> None:
        self.recorder, self.journal = recorder, Path(journal)
        self.grace_epochs, self.min_completed = grace_epochs, min_completed
        self.pruned = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pruned:  # resumed from a pruned run's checkpoint
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch + 1 >= trainer.max_epochs:
            return
        stop = trainer.is_global_zero and median_stop(
            self.recorder.curve, read_completed_curves(self.journal), self.grace_epochs, self.min_completed)
        if trainer.strategy.broadcast(stop, src=0):
            self.pruned = trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"pruned": self.pruned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruned = bool(state_dict["pruned"])


class RunClock(Callback):
    """A run's time across attempts. Its state in each checkpoint is the seconds spent so far
    (earlier attempts included), so a run resumed from last.ckpt knows what came before:
    `before_resume` (0 for a fresh run) plus this attempt's time is the whole duration. The time
    an interrupted attempt spent after its last checkpoint is not counted (it is redone)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.before_resume = 0.0

    @property
    def seconds(self) -> float:
        """Earlier attempts' time (to their last checkpoint) plus this attempt's so far."""
        return self.before_resume + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "before_resume": self.before_resume}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before_resume = float(state_dict["seconds"])


class BestWeights(Callback):
    """The validated weights (the EMA's when EMA is on) of the best epoch so far, weights only:
    `{"state_dict_ema": ...}` at `path`, which timm's `checkpoint_path=` loads. Written by rank 0
    (temp file, then rename) after each validation that beats the curve's earlier epochs; it
    reads the curve of `recorder` (which runs before it), so a resumed run keeps its best."""

    def __init__(self, recorder: CurveRecorder, path: Path) -> None:
        self.recorder, self.path = recorder, Path(path)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        curve = self.recorder.curve
        if trainer.sanity_checking or not curve or curve[-1] <= max(curve[:-1], default=-math.inf):
            return
        if trainer.is_global_zero:
            weights = getattr(pl_module, "eval_model", pl_module).state_dict()
            with atomic_path(self.path) as tmp:
                torch.save({"state_dict_ema": weights, "epoch": trainer.current_epoch,
                            CURVE_METRIC: curve[-1]}, tmp)


class EpochProgress(Callback):
    """Training progress as one plain line per epoch (where no progress bar is drawn): epochs done,
    time per epoch, ETA and the epoch's metrics, through gpunet's progress lines (rank 0 only)."""

    def __init__(self) -> None:
        self.progress = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.progress = PlainProgress(trainer.max_epochs, "epoch", unit="epoch",
                                          initial=trainer.current_epoch, every_percent=0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is None:
            return
        metrics = {k: f"{float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())
                   if not k.startswith("lr-") and getattr(v, "numel", lambda: 1)() == 1}
        self.progress.set_postfix(**metrics)
        self.progress.update(1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
