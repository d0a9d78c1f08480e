"""One candidate network as a LightningModule: the model, loss, EMA, metrics and timm's
optimizer/schedule. Validation scores the EMA weights when EMA is on (what the paper reports)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from gpunet.models import build_model
from gpunet.space.spec import NetworkSpec
from gpunet.train.recipe import build_optimizer, build_scheduler


class CandidateModule(L.LightningModule):
    """Trains `spec` with `recipe`; `spec` and `recipe` may also be plain dicts (checkpoint reload)."""

    def __init__(self, spec: NetworkSpec | dict, num_classes: int, recipe: DictConfig | dict) -> None:
        super().__init__()
        spec = spec if isinstance(spec, NetworkSpec) else NetworkSpec.from_dict(spec)
        recipe = OmegaConf.create(recipe) if isinstance(recipe, dict) else recipe
        self.save_hyperparameters({"spec": spec.to_dict(), "num_classes": num_classes,
                                   "recipe": OmegaConf.to_container(recipe, resolve=True)})
        self.recipe = recipe
        self.model = build_model(spec, num_classes=num_classes, drop_rate=recipe.drop,
                                 drop_path_rate=recipe.drop_path)
        self.ema = ModelEmaV3(self.model, decay=recipe.ema_decay) if recipe.ema else None
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

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self.model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {self.current_epoch}, "
                                     f"step {self.global_step}: the run diverged")
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.eval_model(x)
        self.val_metrics.update(logits, y)
        self.log("val/loss", self.val_criterion(logits, y), on_epoch=True)
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
