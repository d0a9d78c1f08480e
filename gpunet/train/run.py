"""Train one candidate: what one job of a search (and `python -m gpunet.train`) runs.

`fit_candidate` resumes from `output_dir/last.ckpt` when a previous attempt left one, returns a
failed result instead of raising when the loss goes NaN or memory runs out, and stops early
(status "pruned") when the median stopping rule is configured and says so.

With several devices (`trainer.devices=8`, DDP) every rank runs `fit_candidate` and returns the
same result; files (checkpoints, curve.json, logs) are written by rank 0 only.
"""

from __future__ import annotations

import gc
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import DictConfig, OmegaConf

from gpunet.console import is_terminal, route_lightning_logs
from gpunet.models.baseline import TimmNetwork
from gpunet.space.spec import NetworkSpec
from gpunet.train.callbacks import BestWeights, CurveRecorder, EpochProgress, MedianStopping, RunClock
from gpunet.train.data import build_datamodule
from gpunet.train.loggers import build_loggers, uses_wandb
from gpunet.train.module import CandidateModule
from gpunet.train.recipe import gradient_clipping, precision

Status = Literal["completed", "failed", "pruned"]
LAST_CKPT = "last.ckpt"
BEST_WEIGHTS = "best.pth"  # weights only: the best epoch's validated weights
CURVE_FILE = "curve.json"


@dataclass
class TrainResult:
    """What a search records about a trial. `best_top1` is the best val top-1 so far, a fraction
    in [0, 1] (of the EMA weights when EMA is on), None when no epoch finished; `curve` is the val
    top-1 after each epoch. `rank` of `world_size` is the process that returned it (DDP runs one
    per device, and all of them return the same result). `checkpoint` is last.ckpt (what a run
    resumes from; timm's `checkpoint_path=` loads its final validated weights); `best_weights` is
    best.pth (the best epoch's, weights only) when best_weights asks for it.
    `seconds_before_resume` is the training time of earlier attempts of a resumed run (0 for a
    fresh one), carried in the checkpoint."""

    status: Status
    best_top1: float | None
    curve: list[float] = field(default_factory=list)
    epochs: int = 0
    error: str | None = None
    checkpoint: Path | None = None
    num_classes: int | None = None  # of the data, so the search can rebuild the trained head
    rank: int = 0
    world_size: int = 1
    best_weights: Path | None = None
    seconds_before_resume: float = 0.0


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA OOM has its own type; a failed CPU allocation is a RuntimeError that says so."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


@dataclass(frozen=True)
class EarlyStop:
    """Median stopping against the thresholds file its search keeps (see MedianThresholds)."""

    thresholds: Path
    grace_epochs: int
    min_completed: int


@dataclass(frozen=True)
class TrainSettings:
    """What training takes from the app's config, read once at the edge (`from_config`): the
    data, recipe and logger groups for their builders, and plain values for the rest."""

    data: DictConfig
    recipe: DictConfig
    logger: DictConfig
    accelerator: str
    precision: str  # Lightning's, from the recipe's AMP switch and the device
    seed: int
    trainer: dict[str, Any]  # extra lightning.Trainer arguments
    early_stop: EarlyStop | None = None
    best_weights: bool = True  # also keep best.pth
    run_config: dict[str, Any] = field(default_factory=dict)  # what the loggers record
    channels_last: bool = False  # the device's memory format for training (speed only)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainSettings:
        stop = cfg.early_stop
        early = (EarlyStop(Path(stop.thresholds), int(stop.grace_epochs), int(stop.min_completed))
                 if stop.thresholds else None)
        return cls(cfg.data, cfg.recipe, cfg.logger, str(cfg.device.accelerator),
                   precision(cfg.recipe, cfg.device), int(cfg.seed),
                   OmegaConf.to_container(cfg.trainer, resolve=True), early,
                   bool(cfg.get("best_weights", True)), OmegaConf.to_container(cfg, resolve=True),
                   bool(cfg.device.get("channels_last", False)))


def build_callbacks(settings: TrainSettings, output_dir: Path) -> tuple[CurveRecorder, MedianStopping | None,
                                                                        RunClock, list]:
    """Curve, optional median stopping (after the curve: it reads it), the run's clock, the best
    epoch's weights (best.pth, weights only, when settings.best_weights; after the curve: it reads
    it), then last.ckpt every epoch (Lightning's save_last only follows top-k saves, so it is its own
    callback): the one checkpoint, which a run resumes from."""
    recorder = CurveRecorder(output_dir / CURVE_FILE)
    clock = RunClock()
    stop = settings.early_stop
    stopper = (MedianStopping(recorder, stop.thresholds, stop.grace_epochs, stop.min_completed)
               if stop is not None else None)
    best = [BestWeights(recorder, output_dir / BEST_WEIGHTS)] if settings.best_weights else []
    last = ModelCheckpoint(dirpath=output_dir, filename=LAST_CKPT.removesuffix(".ckpt"), save_top_k=1,
                           enable_version_counter=False)
    callbacks = [recorder, *([stopper] if stopper else []), clock, *best, last,
                 LearningRateMonitor(logging_interval="epoch")]
    return recorder, stopper, clock, callbacks


def train_batches(trainer: L.Trainer, train_size: int, batch_size: int) -> int:
    """Training batches per epoch on each rank (the sampler pads ranks evenly; the last partial
    batch is dropped), after `limit_train_batches`."""
    batches = math.ceil(train_size / trainer.world_size) // batch_size
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit) if limit is not None else batches


def training_resolution(spec_resolution: int, data: DictConfig, recipe: DictConfig) -> int:
    """`data.resolution` when set; else the candidate's own scaled by the recipe's
    `resolution_scale` (a proxy trains at a fraction of it), rounded to a multiple of 8."""
    if data.get("resolution"):
        return int(data.resolution)
    scale = float(recipe.get("resolution_scale", 1.0))
    return max(8, 8 * round(spec_resolution * scale / 8))


def fit_candidate(cfg: DictConfig, spec: NetworkSpec | TimmNetwork, output_dir: Path) -> TrainResult:
    """Train `spec` with the app config's data, recipe, device, logger, seed, early_stop and
    trainer nodes (read here, at the edge; `fit` below takes them as TrainSettings)."""
    return fit(TrainSettings.from_config(cfg), spec, output_dir)


def fit(settings: TrainSettings, spec: NetworkSpec | TimmNetwork,
        output_dir: Path) -> TrainResult:
    """Train `spec` (a candidate, or a timm baseline seen at its resolution); checkpoints,
    curve.json and logs go to `output_dir`. Bad config or data raises at once."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    route_lightning_logs(single_node=int(settings.trainer.get("num_nodes") or 1) == 1)
    L.seed_everything(settings.seed, workers=True)
    resolution = training_resolution(spec.resolution, settings.data, settings.recipe)
    datamodule = build_datamodule(settings.data, settings.recipe, resolution,
                                  pin_memory=settings.accelerator == "gpu")
    module = CandidateModule(spec, datamodule.num_classes, settings.recipe, settings.channels_last)
    recorder, stopper, clock, callbacks = build_callbacks(settings, output_dir)
    run_config = {**settings.run_config, "spec": spec.to_dict(), "resolution": resolution}
    loggers = build_loggers(settings.logger, output_dir, run_config, spec.name or output_dir.name)
    # Lightning's bar on a terminal; elsewhere (a log file, a pipe, a cluster job) a line per epoch
    bar = bool(settings.trainer.get("enable_progress_bar", True)) and is_terminal(sys.stdout)
    per_epoch = settings.recipe.get("train_batches_per_epoch")  # the trainer's own limit wins
    limit = {"limit_train_batches": int(per_epoch)} if per_epoch else {}
    trainer = L.Trainer(default_root_dir=output_dir, max_epochs=settings.recipe.epochs,
                        accelerator=settings.accelerator, precision=settings.precision,
                        callbacks=[*callbacks, *([] if bar else [EpochProgress()])], logger=loggers,
                        **{**limit, **gradient_clipping(settings.recipe), **settings.trainer,
                           "enable_progress_bar": bar})
    # step metrics at least once an epoch (Lightning warns when an epoch is shorter than the interval)
    batches = train_batches(trainer, len(datamodule.train), int(settings.recipe.batch_size))
    if 0 < batches < trainer.log_every_n_steps:
        trainer.log_every_n_steps = batches
    last = output_dir / LAST_CKPT
    status: Status = "completed"
    error = None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=last if last.is_file() else None)
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher) and last.is_file():
            # ddp_spawn/ddp_fork train in child processes, whose callbacks' state does not come back
            states = torch.load(last, map_location="cpu", weights_only=False)["callbacks"]
            for callback in (recorder, *([stopper] if stopper else [])):
                callback.load_state_dict(states[callback.state_key])
            clock.before_resume = float(states.get(clock.state_key, {}).get("before_resume", 0.0))
        if stopper is not None and stopper.pruned:
            status = "pruned"
    except Exception as err:
        if not (isinstance(err, FloatingPointError) or is_out_of_memory(err)):
            raise
        status, error = "failed", f"{type(err).__name__}: {err}"
    finally:
        rank, world_size = trainer.global_rank, trainer.world_size
        if uses_wandb(settings.logger):
            import wandb

            wandb.finish()
        del trainer, module
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    best = output_dir / BEST_WEIGHTS
    curve = recorder.curve
    return TrainResult(status, max(curve) if curve else None, list(curve), len(curve), error,
                       last if last.is_file() else None, datamodule.num_classes, rank, world_size,
                       best if best.is_file() else None, clock.before_resume)
