"""Lightning callbacks of a candidate's run: its learning curve, and the median stopping rule that
drops unpromising candidates early (paper §3.3.2) against thresholds its search hands it. Both
keep their state in the checkpoint, so a resumed run has its whole curve and a pruned run stays
pruned. Under DDP every rank keeps the (rank-synced) curve, rank 0 alone writes it, and rank 0's
stopping decision holds for all ranks."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MedianThresholds:
    """What the median stopping rule (Golovin et al., Vizier 2017) needs from a search: how many
    trials have completed, and at each epoch t the median over them of their running mean of val
    top-1 up to t. The search computes them from its journal and keeps them in a JSON file
    (rewritten atomically as trials finish), which the trial's job reads at each epoch: training
    never reads the journal."""

    completed: int = 0
    by_epoch: tuple[float, ...] = ()

    @classmethod
    def from_curves(cls, curves: Sequence[Sequence[float]]) -> MedianThresholds:
        """From the completed trials' curves. A curve shorter than t contributes its whole mean."""
        curves = [c for c in curves if c]
        longest = max((len(c) for c in curves), default=0)
        return cls(len(curves), tuple(statistics.median(statistics.fmean(c[:t]) for c in curves)
                                      for t in range(1, longest + 1)))

    def at(self, epoch: int) -> float:
        """The threshold after `epoch` (1-based) epochs; past the longest completed curve, the
        median of whole-curve means."""
        return self.by_epoch[min(epoch, len(self.by_epoch)) - 1]

    def write(self, path: Path) -> None:
        write_json(path, {"completed": self.completed, "by_epoch": list(self.by_epoch)})

    @classmethod
    def read(cls, path: Path) -> MedianThresholds:
        """The thresholds at `path`; none (never stop) while the search has written none."""
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(int(data["completed"]), tuple(float(v) for v in data["by_epoch"]))


def median_stop(curve: Sequence[float], thresholds: MedianThresholds, grace_epochs: int,
                min_completed: int) -> bool:
    """The median stopping rule: after `grace_epochs`, once `min_completed` trials completed, stop
    when the best value so far is below the median of their running means at this epoch."""
    t = len(curve)
    if t <= grace_epochs or thresholds.completed < min_completed or not thresholds.by_epoch:
        return False
    return max(curve) < thresholds.at(t)


class MedianStopping(Callback):
    """Stops the run (status "pruned") when `median_stop` says so against the search's thresholds
    file (`MedianThresholds`). Rank 0 reads it and decides for all ranks: ranks that read it at
    different moments could disagree, and a rank that stops alone leaves the others waiting."""

    def __init__(self, recorder: CurveRecorder, thresholds: Path, grace_epochs: int,
                 min_completed: int) -> None:
        self.recorder, self.thresholds = recorder, Path(thresholds)
        self.grace_epochs, self.min_completed = grace_epochs, min_completed
        self.pruned = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pruned:  # resumed from a pruned run's checkpoint
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch + 1 >= trainer.max_epochs:
            return
        stop = trainer.is_global_zero and median_stop(
            self.recorder.curve, MedianThresholds.read(self.thresholds), self.grace_epochs,
            self.min_completed)
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
