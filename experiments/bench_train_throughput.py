"""Training throughput (images/s) of gpunet's LightningModule vs a plain PyTorch loop.

Both train the same model (same spec, seed and init) on the same DataLoader with the same
optimizer, schedule, EMA, loss, NaN check and precision; the plain loop is what timm's train.py
does per step. Only the training epochs are timed (no validation, checkpointing or progress bar),
the first epoch is a warm-up, and the two loops alternate so background load hits both alike.
Target: Lightning >= 0.95x the plain loop. Writes experiments/results/train_throughput.{json,md}.

  python experiments/bench_train_throughput.py [--device cpu] [--reps 3] [--epochs 3] ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from timm.utils import ModelEmaV3
from torch import nn

from gpunet.models import build_model, resolve_spec
from gpunet.paths import CONF_DIR
from gpunet.space import space_from_config
from gpunet.train.data import build_datamodule
from gpunet.train.module import CandidateModule
from gpunet.train.recipe import build_optimizer, build_scheduler, precision

RESULTS = Path(__file__).resolve().parent / "results"
SMALLEST = "[" + ",".join(["0"] * 41) + "]"


class EpochTimer(Callback):
    """Wall time of each training epoch (after the loader is built, before checkpoints)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.accelerator.__class__.__name__ == "CUDAAccelerator":
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.accelerator.__class__.__name__ == "CUDAAccelerator":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.start)


def lightning_epochs(cfg: DictConfig, spec, dm) -> list[float]:
    L.seed_everything(cfg.seed, verbose=False)
    module = CandidateModule(spec, dm.num_classes, cfg.recipe)
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=cfg.recipe.epochs, accelerator=cfg.device.accelerator, devices=1,
                        precision=precision(cfg.recipe, cfg.device), callbacks=[timer], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return timer.times


def autocast_and_scaler(prec: str, device: torch.device):
    """What Lightning's precision plugin does for `prec`, by hand."""
    if prec == "32-true":
        return contextlib.nullcontext, None
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}[prec]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def plain_epochs(cfg: DictConfig, spec, dm) -> list[float]:
    L.seed_everything(cfg.seed, verbose=False)
    device = torch.device("cuda" if cfg.device.accelerator == "gpu" else "cpu")
    recipe = cfg.recipe
    model = build_model(spec, num_classes=dm.num_classes, drop_rate=recipe.drop,
                        drop_path_rate=recipe.drop_path).to(device)
    ema = ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema else None
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.smoothing)
    loader = dm.train_dataloader()
    optimizer = build_optimizer(model, recipe, recipe.batch_size)
    scheduler = build_scheduler(optimizer, recipe, len(loader))
    autocast, scaler = autocast_and_scaler(precision(recipe, cfg.device), device)
    updates, times = 0, []
    for epoch in range(recipe.epochs):
        scheduler.step(epoch)
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                loss = criterion(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            updates += 1
            scheduler.step_update(updates)
            if ema is not None:
                ema.update(model, step=updates)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def images_per_s(times: list[float], images: int) -> float:
    """Median over the timed epochs, the first (warm-up) left out."""
    return images / statistics.median(times[1:])


def bench_case(arch: str, args: argparse.Namespace) -> dict:
    overrides = [f"arch={arch}", f"device={args.device}", "search_space=gpunet", "data=fake",
                 f"data.resolution={args.resolution}", f"data.train_size={args.train_size}",
                 f"recipe={args.recipe}", f"recipe.epochs={args.epochs}",
                 f"recipe.batch_size={args.batch_size}"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    spec = resolve_spec(cfg.arch, space_from_config(cfg.search_space))
    dm = build_datamodule(cfg.data, cfg.recipe, args.resolution, pin_memory=cfg.device.accelerator == "gpu")
    images = (args.train_size // args.batch_size) * args.batch_size
    rates: dict[str, list[float]] = {"lightning": [], "plain": []}
    for rep in range(args.reps):  # alternate, and swap who goes first each repetition
        order = ("lightning", "plain") if rep % 2 == 0 else ("plain", "lightning")
        for name in order:
            run = lightning_epochs if name == "lightning" else plain_epochs
            rates[name].append(images_per_s(run(cfg, spec, dm), images))
            print(f"{arch[:12]} rep {rep} {name}: {rates[name][-1]:.1f} images/s", flush=True)
    light, plain = (statistics.median(rates[k]) for k in ("lightning", "plain"))
    return {"arch": arch, "resolution": args.resolution, "batch_size": args.batch_size,
            "precision": precision(cfg.recipe, cfg.device), "recipe": args.recipe,
            "images_per_epoch": images, "lightning_images_per_s": light, "plain_images_per_s": plain,
            "ratio": light / plain, "runs": rates}


def spread(rates: list[float]) -> str:
    return f"{min(rates):.1f}-{max(rates):.1f}"


def write_results(cases: list[dict], env: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_throughput.json").write_text(json.dumps({"env": env, "cases": cases}, indent=1))
    rows = "\n".join(
        f"| {c['arch'] if len(c['arch']) < 20 else 'smallest encoding (41 zeros)'} | {c['resolution']} | "
        f"{c['batch_size']} | {c['precision']} | "
        f"{c['plain_images_per_s']:.1f} ({spread(c['runs']['plain'])}) | "
        f"{c['lightning_images_per_s']:.1f} ({spread(c['runs']['lightning'])}) | **{c['ratio']:.3f}** |"
        for c in cases)
    (RESULTS / "train_throughput.md").write_text(
        "# Training throughput: LightningModule vs plain PyTorch loop\n\n"
        f"Same model, fake data loader, recipe `{cases[0]['recipe']}` (optimizer, schedule, EMA, loss), "
        f"precision; median of {env['reps']} alternating runs, each the median of "
        f"{env['epochs'] - 1} timed epochs after a warm-up. Target: ratio >= 0.95.\n\n"
        "| network | px | batch | precision | plain images/s (runs) | Lightning images/s (runs) | ratio |\n"
        "|---|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"Machine: {env['machine']}, {env['cpu_count']} cores, torch {env['torch']} "
        f"({env['threads']} threads), Lightning {env['lightning']}, device `{env['device']}`. "
        f"Load average before/after: {env['load_before']} / {env['load_after']}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", action="append", help="hub name or encoding (repeatable); "
                        "default: gpunet_0 and the smallest encoding")
    parser.add_argument("--device", default="cpu", help="conf/device/<name>.yaml")
    parser.add_argument("--recipe", default="gpunet", help="conf/recipe/<name>.yaml")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-size", type=int, default=640, help="fake images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is a warm-up")
    parser.add_argument("--reps", type=int, default=3, help="alternating runs of each loop")
    args = parser.parse_args()
    env = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": L.__version__,
           "device": args.device, "reps": args.reps, "epochs": args.epochs,
           "load_before": [round(x, 2) for x in os.getloadavg()]}
    cases = [bench_case(arch, args) for arch in (args.arch or ["gpunet_0", SMALLEST])]
    env["load_after"] = [round(x, 2) for x in os.getloadavg()]
    write_results(cases, env)
    print((RESULTS / "train_throughput.md").read_text())


if __name__ == "__main__":
    main()
