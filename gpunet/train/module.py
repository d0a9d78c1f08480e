"""One candidate network as a LightningModule: the model, loss, EMA, metrics and timm's
optimizer/schedule. Validation scores the EMA weights when EMA is on (what the paper reports).

Multi-device (DDP): the EMA is a frozen submodule (checkpointed and moved with the model, ignored by
DDP's gradient reduction), validation metrics and losses are reduced over all ranks, and the
BatchNorm statistics are averaged over ranks before each validation, as timm's train.py does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3, distribute_bn
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from gpunet.models import build_model
from gpunet.models.baseline import TimmNetwork
from gpunet.models.network import BN_MOMENTUM
from gpunet.space.spec import NetworkSpec
from gpunet.train.recipe import build_optimizer, build_scheduler


@dataclass(frozen=True)
class _GeneratorState:
    """A torch.Generator as plain bytes, which pickle safely to spawned processes."""

    device: str
    state: bytes

    def restore(self) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.set_state(torch.frombuffer(bytearray(self.state), dtype=torch.uint8))
        return generator


class FrozenEma(ModelEmaV3):
    """timm's ModelEmaV3 with its copy frozen. timm's train.py keeps its EMA outside the DDP wrapper;
    ours is a submodule of the LightningModule (so it is checkpointed, restored on resume and moved
    to the device with the model), and ModelEmaV3 leaves its deep copy's parameters requiring grad,
    so DDP would wait for gradients they never get ("parameters that were not used in producing the
    loss"). Frozen, DDP leaves them out of its gradient buckets."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, decay=decay)
        self.requires_grad_(False)

    def __getstate__(self) -> dict[str, Any]:
        """ModelEmaV3 holds a torch.Generator (stochastic rounding), and pickling one to a spawned
        process (`strategy=ddp_spawn`) fails with "unable to resize file" (pytorch#146828: the
        generator's state tensor is freed before the child maps its shared memory); send bytes."""
        state = super().__getstate__()
        for key, value in state.items():
            if isinstance(value, torch.Generator):
                state[key] = _GeneratorState(str(value.device), value.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({k: v.restore() if isinstance(v, _GeneratorState) else v
                              for k, v in state.items()})


def network_from_dict(data: dict) -> NetworkSpec | TimmNetwork:
    """A checkpoint's network: a candidate's spec, or a timm baseline (TimmNetwork.to_dict)."""
    return TimmNetwork.from_dict(data) if "timm_model" in data else NetworkSpec.from_dict(data)


class CandidateModule(L.LightningModule):
    """Trains `spec` (a candidate, or a timm baseline) with `recipe`; `spec` and `recipe` may also
    be plain dicts (checkpoint reload). `channels_last` trains in NHWC memory format, a speed
    setting of the device (not saved: the weights are the same either way)."""

    def __init__(self, spec: NetworkSpec | TimmNetwork | dict, num_classes: int,
                 recipe: DictConfig | dict, channels_last: bool = False) -> None:
        super().__init__()
        spec = network_from_dict(spec) if isinstance(spec, dict) else spec
        recipe = OmegaConf.create(recipe) if isinstance(recipe, dict) else recipe
        self.save_hyperparameters({"spec": spec.to_dict(), "num_classes": num_classes,
                                   "recipe": OmegaConf.to_container(recipe, resolve=True)})
        self.recipe = recipe
        self.model = build_model(spec, num_classes=num_classes, drop_rate=recipe.drop,
                                 drop_path_rate=recipe.drop_path,
                                 # checkpoints written before the recipe had the key: timm's default
                                 bn_momentum=recipe.get("bn_momentum", BN_MOMENTUM))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.ema = FrozenEma(self.model, recipe.ema_decay) if recipe.ema else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.smoothing)
        self.val_criterion = nn.CrossEntropyLoss()
        self.val_metrics = MetricCollection({
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        }, prefix="val/")

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated (and reported): the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_model(x)

    def in_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the weights' memory format (in the steps, not Lightning's batch-transfer hook,
        which warns on every run when the data comes from a LightningDataModule)."""
        return x.contiguous(memory_format=self.memory_format)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self.model(self.in_memory_format(x)), y)
        # every rank stops at the same step (one rank alone would leave the others waiting)
        if not self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True):
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {self.current_epoch}, "
                                     f"step {self.global_step} (on this or another rank): the run diverged")
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        """Average the BatchNorm statistics over ranks (timm's --dist-bn reduce), so every rank
        validates the same weights, the ones rank 0 checkpoints."""
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            for module in (self.model, *([self.ema.module] if self.ema is not None else [])):
                distribute_bn(module, self.trainer.world_size, reduce=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.eval_model(self.in_memory_format(x))
        self.val_metrics.update(logits, y)
        # torchmetrics reduces the metrics over ranks when they are computed; the loss needs sync_dist
        self.log("val/loss", self.val_criterion(logits, y), on_epoch=True, sync_dist=True)
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Update the EMA once per optimizer step (as timm's train.py does)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the validated weights under timm's EMA key, so that
        `timm.create_model(name, num_classes=n, checkpoint_path=<this .ckpt>)` loads them (the
        tensors share storage with the state_dict's, so the file does not grow)."""
        checkpoint["state_dict_ema"] = self.eval_model.state_dict()

    def configure_optimizers(self) -> dict[str, Any]:
        """The lr scales with the global batch (per-device batch x devices x accumulation), and
        per-update schedules count the optimizer steps of one rank (whose DistributedSampler sees
        1/world_size of the data), which Lightning's estimated_stepping_batches already does."""
        trainer = self.trainer
        global_batch = self.recipe.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        optimizer = build_optimizer(self.model, self.recipe, global_batch)
        updates_per_epoch = max(1, trainer.estimated_stepping_batches // trainer.max_epochs)
        scheduler = build_scheduler(optimizer, self.recipe, updates_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        self.lr_schedulers().step(self.current_epoch)  # per-epoch schedules (timm's default)

    def lr_scheduler_step(self, scheduler: Scheduler, metric: Any) -> None:
        scheduler.step_update(num_updates=self.global_step)  # per-update schedules
