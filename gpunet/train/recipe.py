"""The training recipe (conf/recipe/*.yaml) turned into timm's optimizer, scheduler and transforms.

Kept apart from the LightningModule so the throughput benchmark's plain loop builds exactly the
same optimizer and schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig
from timm.data import create_transform
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer

from gpunet.errors import ConfigError


def scaled_lr(recipe: DictConfig, global_batch: int) -> float:
    """The paper's lr is given for a global batch of `lr_base_batch`; scale it linearly."""
    return recipe.lr * global_batch / recipe.lr_base_batch


def build_optimizer(model: nn.Module, recipe: DictConfig, global_batch: int) -> Optimizer:
    """timm's optimizer factory with the recipe's settings (no weight decay on biases and norms)."""
    return create_optimizer_v2(model, opt=recipe.opt, lr=scaled_lr(recipe, global_batch),
                               weight_decay=recipe.weight_decay, momentum=recipe.momentum,
                               eps=recipe.opt_eps)


CLIP_MODES = ("norm", "value")  # Lightning's gradient_clip_algorithm values


def gradient_clipping(recipe: DictConfig) -> dict[str, Any]:
    """Lightning Trainer arguments for the recipe's `clip_grad` (timm's --clip-grad: the largest
    gradient norm, or value, an update may use) and `clip_mode`; none when clip_grad is null."""
    clip = recipe.get("clip_grad")
    if clip is None:
        return {}
    mode = recipe.get("clip_mode", "norm")
    if mode not in CLIP_MODES or not float(clip) > 0:
        raise ConfigError(f"recipe.clip_grad={clip!r} with recipe.clip_mode={mode!r}: clip_grad must be "
                          f"a number > 0 (or null: off) and clip_mode one of {list(CLIP_MODES)}")
    return {"gradient_clip_val": float(clip), "gradient_clip_algorithm": mode}


def build_scheduler(optimizer: Optimizer, recipe: DictConfig, updates_per_epoch: int) -> Scheduler:
    """timm's scheduler factory; step it with `.step(epoch)` and `.step_update(updates)` (each is a
    no-op in the other mode, so callers may call both)."""
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.sched, num_epochs=recipe.epochs, decay_epochs=recipe.decay_epochs,
        decay_rate=recipe.decay_rate, warmup_lr=recipe.warmup_lr, warmup_epochs=recipe.warmup_epochs,
        min_lr=recipe.min_lr, step_on_epochs=recipe.step_on_epochs,
        updates_per_epoch=updates_per_epoch)
    if scheduler is None:
        raise ConfigError(f"recipe.sched={recipe.sched!r} gives no scheduler; use e.g. 'constant'")
    return scheduler


def build_transforms(recipe: DictConfig, resolution: int, hflip: float) -> tuple[Callable, Callable]:
    """timm's train (RandAugment, random erasing, ...) and eval (crop_pct) transforms for PIL
    images at `resolution`; `hflip` comes from the data (mirroring changes some labels)."""
    train = create_transform(
        resolution, is_training=True, scale=tuple(recipe.scale), hflip=hflip,
        color_jitter=recipe.color_jitter, auto_augment=recipe.aa,
        interpolation=recipe.train_interpolation, re_prob=recipe.reprob, re_mode=recipe.remode)
    val = create_transform(resolution, is_training=False, interpolation=recipe.interpolation,
                           crop_pct=recipe.crop_pct)
    return train, val


def precision(recipe: DictConfig, device: DictConfig) -> str:
    """Lightning precision: the device's mixed-precision setting when the recipe asks for AMP."""
    return device.train_precision if recipe.amp else "32-true"
