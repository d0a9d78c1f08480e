"""Why do some tier candidates sit at chance for half of a proxy run? (issue 11, item 1)

Trains candidates of the default tier pool (the candidates of experiments/bench_data_signal.py, its
candidates.json) with the default search's config and recipe (data=digits, recipe=proxy), in a plain
loop that builds exactly what a trial builds (the data module, CandidateModule's model and loss,
recipe.build_optimizer / build_scheduler, stepped per update as CandidateModule steps them) and logs
what Lightning's trial does not: per step the training loss, the training top-1 of the batch and
the lr; per epoch the validation top-1 in eval mode (BatchNorm running statistics, what a trial
reports) and in train mode (batch statistics, no dropout), which tells a BatchNorm-statistics
defect from a model that has not learnt.

Each run is one (variant, candidate, seed): a variant is a list of config overrides against the
default; results are cached under --work/<variant>/c<candidate>-s<seed>.json.

The runs of experiments/results/recipe_defect.md (before: the old proxy lr 0.24; after: 0.06; the
BatchNorm momenta come from the same trainings, see ShadowStats):

    B="nice -n 10 python experiments/bench_recipe_defect.py"
    $B --variant lr0.24 recipe.lr=0.24 --candidates 0 2 5 --seeds 0 1
    $B --variant lr0.06 recipe.lr=0.06 --candidates 0 2 5 --seeds 0 1
    $B --variant lr0.24 recipe.lr=0.24 --candidates 10 --seeds 0
    $B --variant lr0.06 recipe.lr=0.06 --candidates 10 --seeds 0
    $B --variant lr0.24 recipe.lr=0.24 --epochs 3 --seeds 0 --candidates 1 4
    $B --variant lr0.06 recipe.lr=0.06 --epochs 3 --seeds 0 --candidates 1 4
    $B --report lr0.06:0.7
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gpunet.files import save_figure, write_json  # noqa: E402
from gpunet.paths import CONF_DIR  # noqa: E402
from gpunet.space.encoding import encoding_to_spec  # noqa: E402
from gpunet.space.search_space import space_from_config  # noqa: E402
from gpunet.train.data import build_datamodule  # noqa: E402
from gpunet.train.module import CandidateModule  # noqa: E402
from gpunet.train.recipe import build_optimizer, build_scheduler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CANDIDATES = ROOT / "outputs" / "bench_data_signal" / "candidates.json"
GRACE = 2  # the default search's early_stop.grace_epochs: median stopping first decides after it
BEFORE = "lr0.24"  # the variant of the recipe before the fix (proxy lr 0.24, BN momentum 0.1)
FAIL_TOP1 = 0.2  # top-1 below this (chance: 0.1) = has not learnt (as bench_data_signal.py)


def config(seed: int, overrides: list[str]) -> DictConfig:
    """The default search's config (what a trial job gets) on digits, with the seed and overrides."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("search", overrides=["data=digits", f"seed={seed}", *overrides])


MOMENTA = (0.1, 0.5, 0.7, 0.9)  # BatchNorm momenta whose running statistics are kept and validated


class ShadowStats:
    """Running BatchNorm statistics at several momenta, updated from the batches the model trains
    on, as nn.BatchNorm2d updates its own (unbiased variance). Momentum does not change training
    (train mode normalises with batch statistics), so one training gives paired curves for every
    momentum."""

    def __init__(self, model: torch.nn.Module, momenta: tuple[float, ...]) -> None:
        self.bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.stats = {mo: {bn: (bn.running_mean.clone(), bn.running_var.clone()) for bn in self.bns}
                      for mo in momenta}
        self.frozen = False  # while validating
        for bn in self.bns:
            bn.register_forward_hook(self.update)

    @torch.no_grad()
    def update(self, bn: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not bn.training or self.frozen:
            return
        x = inputs[0]
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=True)
        for mo, stats in self.stats.items():
            m, v = stats[bn]
            m.mul_(1 - mo).add_(mean, alpha=mo)
            v.mul_(1 - mo).add_(var, alpha=mo)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader, momentum: float | None) -> float:
        """Validation top-1 with the running statistics of `momentum`, or with batch statistics
        (None: BN in train mode, dropout off); the model's own statistics are left as they were."""
        saved = {bn: (bn.running_mean.clone(), bn.running_var.clone()) for bn in self.bns}
        for bn in self.bns:
            if momentum is not None:
                bn.running_mean.copy_(self.stats[momentum][bn][0])
                bn.running_var.copy_(self.stats[momentum][bn][1])
        self.frozen = True
        top1 = evaluate(model, loader, train_bn=momentum is None)
        self.frozen = False
        for bn, (mean, var) in saved.items():
            bn.running_mean.copy_(mean), bn.running_var.copy_(var)
        return top1


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, train_bn: bool = False) -> float:
    """Validation top-1 in eval mode (with BatchNorm in train mode if `train_bn`)."""
    model.eval()
    if train_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def run(candidate: int, seed: int, overrides: list[str], epochs: int | None) -> dict:
    """One training as a trial does it, logged per step; `epochs` stops early (the schedule still
    spans recipe.epochs)."""
    cfg = config(seed, overrides)
    encoding = json.loads(CANDIDATES.read_text())["encodings"][candidate]
    spec = encoding_to_spec(space_from_config(cfg.search_space), encoding)
    L.seed_everything(seed, workers=True)
    recipe = cfg.recipe
    dm = build_datamodule(cfg.data, recipe, cfg.data.resolution or spec.resolution)
    module = CandidateModule(spec, dm.num_classes, recipe)
    model, criterion = module.model, module.criterion
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    per_epoch = len(train_loader)
    shadows = ShadowStats(model, MOMENTA)
    optimizer = build_optimizer(model, recipe, recipe.batch_size)
    scheduler = build_scheduler(optimizer, recipe, per_epoch)
    steps, epochs_log = [], []
    n_epochs = min(epochs or recipe.epochs, recipe.epochs)
    start, cpu0 = time.perf_counter(), time.process_time()
    update = 0
    for epoch in range(n_epochs):
        scheduler.step(epoch)
        model.train()
        for x, y in train_loader:
            logits = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            update += 1
            scheduler.step_update(num_updates=update)
            steps.append({"loss": loss.item(), "acc": float((logits.argmax(1) == y).float().mean()),
                          "lr": optimizer.param_groups[0]["lr"]})
        epochs_log.append({"val_top1": evaluate(model, val_loader),  # the model's own statistics
                           "val_top1_batch_stats": shadows.evaluate(model, val_loader, None),
                           **{f"val_top1_bn{mo:g}": shadows.evaluate(model, val_loader, mo)
                              for mo in MOMENTA},
                           "train_loss": sum(s["loss"] for s in steps[-per_epoch:]) / per_epoch,
                           "train_acc": sum(s["acc"] for s in steps[-per_epoch:]) / per_epoch})
        e = epochs_log[-1]
        shadow = " ".join(f"bn{mo:g} {e[f'val_top1_bn{mo:g}']:.3f}" for mo in MOMENTA)
        print(f"c{candidate} s{seed} {overrides} epoch {epoch}: val {e['val_top1']:.3f} ({shadow}, "
              f"batch stats {e['val_top1_batch_stats']:.3f}) train loss {e['train_loss']:.3f} "
              f"acc {e['train_acc']:.3f}", flush=True)
    return {"candidate": candidate, "seed": seed, "overrides": overrides, "resolution": spec.resolution,
            "steps_per_epoch": per_epoch, "steps": steps, "epochs": epochs_log,
            "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu0}


def load(work: Path) -> dict[str, list[dict]]:
    """Every cached run, by variant."""
    return {d.name: [json.loads(p.read_text()) for p in sorted(d.glob("c*-s*.json"))]
            for d in sorted(work.iterdir()) if d.is_dir()}


def curve(r: dict, key: str) -> list[float]:
    return [e[key] for e in r["epochs"]]


def report(work: Path, fix: str) -> None:
    """Per variant and BN momentum: top-1 after epoch GRACE (where median stopping first decides),
    best and final top-1, and how many runs stay below FAIL_TOP1; then the figures."""
    runs = load(work)
    lines = ["| variant | BN statistics | runs | mean top-1 after epoch 2 | below 0.2 after epoch 2 "
             "| mean best top-1 | best below 0.2 | mean final top-1 |", "|---|---|---|---|---|---|---|---|"]
    for variant, rs in runs.items():
        full = [r for r in rs if len(r["epochs"]) == 10]
        for key in ["val_top1_batch_stats", *(f"val_top1_bn{mo:g}" for mo in MOMENTA)]:
            at2 = [curve(r, key)[GRACE - 1] for r in rs if len(r["epochs"]) >= GRACE]
            best = [max(curve(r, key)) for r in full]
            final = [curve(r, key)[-1] for r in full]
            label = ("batch statistics" if key.endswith("stats")
                     else "momentum " + key.removeprefix("val_top1_bn"))
            mean_best, mean_final = (np.mean(x) if x else float("nan") for x in (best, final))
            lines.append(f"| {variant} | {label} | {len(at2)} ({len(full)} full) | {np.mean(at2):.3f} | "
                         f"{sum(a < FAIL_TOP1 for a in at2)} | {mean_best:.3f} | "
                         f"{sum(b < FAIL_TOP1 for b in best)} | {mean_final:.3f} |")
    print("\n".join(lines))
    fix_variant, fix_momentum = fix.split(":")
    before, after = ({(r["candidate"], r["seed"]): r for r in runs.get(v, []) if len(r["epochs"]) == 10}
                     for v in (BEFORE, fix_variant))
    after_key = f"val_top1_bn{fix_momentum}"
    keys = sorted(set(before) & set(after))
    cols = 4
    fig, axes = plt.subplots(-(-len(keys) // cols), cols, figsize=(4 * cols, 3.2 * -(-len(keys) // cols)),
                             squeeze=False)
    epochs = np.arange(1, 11)
    for ax, k in zip(axes.flat, keys):
        ax.plot(epochs, curve(before[k], "val_top1_bn0.1"), "o-", color="C3",
                label="before (lr 0.24, BN momentum 0.1)")
        ax.plot(epochs, curve(before[k], after_key), "s--", color="C1", lw=1,
                label=f"lr 0.24, BN momentum {fix_momentum}")
        ax.plot(epochs, curve(after[k], after_key), "o-", color="C2",
                label=f"after ({fix_variant}, BN momentum {fix_momentum})")
        ax.plot(epochs, curve(after[k], "val_top1_batch_stats"), ":", color="C2", lw=1,
                label="after, batch statistics")
        ax.axhline(FAIL_TOP1, color="grey", ls=":", lw=0.8)
        ax.set(title=f"candidate {k[0]}, seed {k[1]} ({before[k]['resolution']} px)", ylim=(0, 1.02),
               xlabel="epoch", ylabel="val top-1")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if keys:
        axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Proxy recipe on digits: validation top-1 per epoch before / after the fix")
    fig.tight_layout()
    save_figure(fig, RESULTS / "recipe_defect_curves.png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for variant, color in ((BEFORE, "C3"), (fix_variant, "C2")):
        for r in runs.get(variant, []):
            if (r["candidate"], r["seed"]) == (0, 0):
                steps = r["steps"]
                label = f"{'before' if variant == BEFORE else 'after'}: {variant}"
                axes[0].plot([s["loss"] for s in steps], color=color, lw=0.8, label=label)
                axes[1].plot([s["lr"] for s in steps], color=color, label=label)
    axes[0].axhline(np.log(10), color="grey", ls=":", lw=0.8, label="ln 10 (uniform guess)")
    axes[0].set(title="candidate 0, seed 0: training loss per step", xlabel="update", ylabel="loss")
    axes[1].set(title="lr per update (batch 64)", xlabel="update", ylabel="lr", yscale="log")
    axes[0].legend(fontsize=8), axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, RESULTS / "recipe_defect_steps.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", help="name of this set of overrides (cache key)")
    parser.add_argument("--candidates", type=int, nargs="+", default=[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help="stop after this many epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_recipe_defect")
    parser.add_argument("--report", metavar="VARIANT:MOMENTUM", default=None,
                        help="only report: the table of every cached run, and figures of default vs this fix")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.report:
        report(args.work, args.report)
        return
    if not args.variant:
        parser.error("--variant NAME is needed to train (it names the cache directory)")
    torch.set_num_threads(args.threads)
    for c in args.candidates:
        for s in args.seeds:
            path = args.work / args.variant.replace("/", "_") / f"c{c:02d}-s{s}.json"
            if path.is_file() and len(json.loads(path.read_text())["epochs"]) >= (args.epochs or 10):
                continue
            out = run(c, s, args.overrides, args.epochs)
            write_json(path, {"variant": args.variant, **out})


if __name__ == "__main__":
    main()
