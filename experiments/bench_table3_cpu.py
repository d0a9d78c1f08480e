"""The paper's headline at CPU scale (its Table 3; issue 11, item 5): searched networks vs timm's
hand-designed ones at equal measured latency.

For each tier (default 1ms and 2ms of the CPU space), the best network of a default search
(`python -m gpunet.search searcher=lamcts_bo tier=<tier>`, resumed from its journal when it ran
before), and timm's hand-designed networks (MobileNetV2/V3, MnasNet, LCNet, EfficientNet, TinyNet,
RegNet, ResNet, ...). Every network is seen exactly as a candidate is:
  * latency: end to end, batch 1, on the search's own backend (ONNX Runtime, 1 thread), at the
    searched network's input size, with a classifier for the data's classes; all measured in one
    process, interleaved rounds, median of the rounds' medians;
  * accuracy: trained with the search's recipe (recipe=proxy unless overridden), data and budget,
    from scratch, with 3 seeds (RETRAIN_SEEDS, the searched network included).
A tier's baselines are the timm networks whose measured latency is at or below the tier's upper
edge. Target: the searched network more accurate (mean top-1) than every baseline of equal or lower
measured latency. Params count every weight; MACs are torch's FlopCounterMode FLOPs / 2 at the
input size (convolutions and linear layers), the same counter for both families.

Trainings cache under --work (a killed run resumes). Writes
experiments/results/table3_cpu.{json,md,png}. Run alone (latency needs an idle machine):

    python experiments/bench_table3_cpu.py                       # searches, latency, trainings
    python experiments/bench_table3_cpu.py --search-dir 1ms=outputs/bench_search_payoff/lamcts_bo-s0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from gpunet.console import setup as setup_console  # noqa: E402
from gpunet.files import save_figure, write_json, write_text  # noqa: E402
from gpunet.latency.backends import create_backend  # noqa: E402
from gpunet.latency.stratify import Tier  # noqa: E402
from gpunet.latency.timing import summarize  # noqa: E402
from gpunet.models import build_model  # noqa: E402
from gpunet.models.baseline import TimmNetwork  # noqa: E402
from gpunet.paths import CONF_DIR  # noqa: E402
from gpunet.space.spec import NetworkSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
RETRAIN_SEEDS = (101, 102, 103)
ROUNDS = 15  # latency: interleaved rounds over all networks (drift on a shared machine hits all alike;
# one network's median moved by up to 25% between processes on an idle machine)
# timm's small hand-designed ImageNet networks, smallest widths first; which of them a tier gets is
# decided by their measured latency, not by these names
TIMM_MODELS = ("lcnet_035", "lcnet_050", "lcnet_075", "lcnet_100", "mobilenetv3_small_050",
               "mobilenetv3_small_075", "mobilenetv3_small_100", "mobilenetv3_large_075",
               "mobilenetv3_large_100", "mnasnet_small", "mnasnet_050", "mnasnet_100",
               "mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_100", "tinynet_e", "tinynet_d",
               "efficientnet_lite0", "efficientnet_b0", "regnetx_002", "regnety_002",
               "ghostnet_050", "resnet10t", "resnet18")


def search_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("search", overrides=["trainer.enable_progress_bar=false", *overrides])


def run_search(directory: Path, tier: str, seed: int, work: Path) -> None:
    """The README's main command for `tier` (resumes from its journal when it ran before)."""
    cmd = [sys.executable, "-m", "gpunet.search", "searcher=lamcts_bo", f"tier={tier}", f"seed={seed}",
           f"hydra.sweep.dir={directory}", "hub.add=false"]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "GPUNET_HUB_DIR": str(work / "hub")})


def searched_network(directory: Path) -> tuple[NetworkSpec, dict]:
    best = yaml.safe_load((directory / "best.yaml").read_text())
    return NetworkSpec.from_dict(best["spec"]), best


def cost(model: torch.nn.Module, resolution: int) -> tuple[int, int]:
    """(params, MACs) of the model at batch 1."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def measure(models: dict[str, torch.nn.Module], resolution: int, cfg: DictConfig) -> dict[str, list[float]]:
    """Each model's end-to-end latency (ms) on the search's backend: the median of each of ROUNDS
    interleaved rounds."""
    backend = create_backend(cfg.latency, cfg.device)
    try:
        runners = {k: backend.prepare(m.eval(), (backend.batch_size, 3, resolution, resolution))
                   for k, m in models.items()}
        rounds: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(ROUNDS):
            for k, run in runners.items():
                rounds[k].append(summarize(run()).median_ms)
        return rounds
    finally:
        backend.close()


def train(network: NetworkSpec | TimmNetwork, seed: int, work: Path, overrides: list[str]) -> dict:
    """One training with the search's recipe and data (cached by network, seed and overrides)."""
    from gpunet.train.run import fit_candidate

    key = hashlib.sha256(json.dumps([network.to_dict(), overrides]).encode()).hexdigest()[:12]
    run_dir = work / "train" / f"{network.name}-{key}-s{seed}"
    cached = run_dir / "result.json"
    if not cached.is_file():
        torch.set_num_threads(1)
        result = fit_candidate(search_config(f"seed={seed}", *overrides), network, run_dir)
        write_json(cached, {"best_top1": result.best_top1, "status": result.status, "curve": result.curve})
    return json.loads(cached.read_text())


def label(row: dict) -> str:
    """A row's name in the results: a timm network at each input size it was seen at."""
    return row["name"] if row["family"] == "searched" else f"{row['name']}@{row['resolution']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", nargs="+", default=["1ms", "2ms"])
    parser.add_argument("--search-dir", nargs="*", default=[], metavar="TIER=DIR",
                        help="use this finished search for a tier instead of running one")
    parser.add_argument("--seed", type=int, default=0, help="the searches' seed")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_table3")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once (1 thread each)")
    parser.add_argument("--models", nargs="+", default=list(TIMM_MODELS), help="the timm networks")
    parser.add_argument("--name", default="table3_cpu", help="results file name (experiments/results/)")
    parser.add_argument("overrides", nargs="*", help="training overrides, e.g. recipe.epochs=10")
    args = parser.parse_args()
    setup_console()
    torch.set_num_threads(1)  # idle torch threads beside the 1-thread ONNX Runtime sessions
    given = dict(item.split("=", 1) for item in args.search_dir)
    for tier, directory in given.items():  # `--search-dir A=B recipe.epochs=20` would swallow the override
        if tier not in args.tiers or not (Path(directory) / "best.yaml").is_file():
            parser.error(f"--search-dir {tier}={directory}: not one of --tiers {args.tiers} with a "
                         "finished search (best.yaml); give training overrides before the options")
    cfg = search_config()
    classes = int(cfg.data.num_classes) if cfg.data.get("num_classes") else 10
    searched = {}
    for tier in args.tiers:
        directory = Path(given.get(tier) or args.work / f"search-{tier}").resolve()
        if tier not in given:
            run_search(directory, tier, args.seed, args.work)
        searched[tier] = (directory, *searched_network(directory))
    rows = []
    for resolution in sorted({spec.resolution for _, spec, _ in searched.values()}):
        networks: dict[str, NetworkSpec | TimmNetwork] = {
            f"searched {tier}": spec.with_num_classes(classes)
            for tier, (_, spec, _) in searched.items() if spec.resolution == resolution}
        networks.update({name: TimmNetwork(name, resolution) for name in args.models})
        models = {k: build_model(n, num_classes=classes) for k, n in networks.items()}
        rounds = measure(models, resolution, cfg)
        for key, network in networks.items():
            params, macs = cost(models[key], resolution)
            rows.append({"name": key, "family": "searched" if key.startswith("searched") else "timm",
                         "network": network, "resolution": resolution,
                         "latency_ms": statistics.median(rounds[key]), "latency_rounds_ms": rounds[key],
                         "params": params, "macs": macs})
    upper = {tier: Tier.from_config(search_config(f"tier={tier}").tier).band[1] for tier in args.tiers}
    chosen = [r for r in rows if r["family"] == "searched" or any(
        r["latency_ms"] <= upper[t] and r["resolution"] == searched[t][1].resolution for t in args.tiers)]
    todo = [(label(r), r["network"], s) for r in chosen for s in RETRAIN_SEEDS]
    print(f"training {len(todo)} runs ({len(chosen)} networks x {len(RETRAIN_SEEDS)} seeds)", flush=True)
    done = Parallel(n_jobs=args.jobs)(delayed(train)(n, s, args.work, args.overrides) for _, n, s in todo)
    top1: dict[str, list[float]] = {}
    for (name, _, _), result in zip(todo, done):
        top1.setdefault(name, []).append(float(result["best_top1"] or 0.0))
    recipe = f"data={cfg.data.name}, recipe={cfg.recipe.name} {' '.join(args.overrides)}".strip()
    report(rows, top1, searched, upper, recipe, args.name)


def report(rows: list[dict], top1: dict[str, list[float]], searched: dict, upper: dict[str, float],
           recipe: str, name: str) -> None:
    table = []
    for r in rows:
        scores = top1.get(label(r))
        table.append({k: v for k, v in r.items() if k != "network"} | {
            "top1": scores, "top1_mean": float(np.mean(scores)) if scores else None,
            "top1_std": float(np.std(scores, ddof=1)) if scores else None})
    verdicts = {}
    for tier, (directory, spec, best) in searched.items():
        mine = next(t for t in table if t["name"] == f"searched {tier}")
        rivals = [t for t in table if t["family"] == "timm" and t["top1_mean"] is not None
                  and t["resolution"] == spec.resolution and t["latency_ms"] <= mine["latency_ms"]]
        below_edge = [t for t in table if t["family"] == "timm" and t["top1_mean"] is not None
                      and t["resolution"] == spec.resolution and t["latency_ms"] <= upper[tier]]
        beaten = [t["name"] for t in rivals if t["top1_mean"] < mine["top1_mean"]]
        verdicts[tier] = {"search_dir": str(directory), "search_top1": best.get("val_top1"),
                          "latency_ms": mine["latency_ms"], "top1_mean": mine["top1_mean"],
                          "tier_upper_ms": upper[tier], "baselines_at_or_below_its_latency": len(rivals),
                          "beaten": len(beaten), "baselines_at_or_below_the_tier_edge": len(below_edge),
                          "met": len(rivals) > 0 and len(beaten) == len(rivals)}
    write_json(RESULTS / f"{name}.json", {"training": recipe, "seeds": list(RETRAIN_SEEDS),
                                             "rows": table, "tiers": verdicts})
    trained = sorted((t for t in table if t["top1_mean"] is not None), key=lambda t: t["latency_ms"])
    lines = [f"| {t['name']} | {t['resolution']} | {t['latency_ms']:.3f} | {t['params'] / 1e6:.2f} | "
             f"{t['macs'] / 1e6:.1f} | {t['top1_mean']:.4f} ± {t['top1_std']:.4f} |" for t in trained]
    untrained = ", ".join(f"{t['name']} {t['latency_ms']:.2f}" for t in table if t["top1_mean"] is None)
    verdict_lines = [
        f"- **{tier}** (edge {v['tier_upper_ms']:.2f} ms): the searched network, {v['latency_ms']:.3f} ms, "
        f"top-1 {v['top1_mean']:.4f}, beats {v['beaten']} of the "
        f"{v['baselines_at_or_below_its_latency']} "
        f"baselines at or below its measured latency ({v['baselines_at_or_below_the_tier_edge']} at or "
        f"below the tier's edge): target **{'met' if v['met'] else 'missed'}**"
        for tier, v in verdicts.items()]
    text = "\n".join([
        "# Searched vs hand-designed networks at equal measured latency (issue 11, item 5)", "",
        "The paper's Table 3 at CPU scale. Latency: ONNX Runtime, 1 thread, batch 1, this machine, "
        "end to end at the searched network's input size with a 10-class classifier. Top-1: trained "
        f"from scratch with {recipe} (the search's data and recipe, and the overrides listed), "
        f"mean ± std over seeds {list(RETRAIN_SEEDS)}. MACs: torch FlopCounterMode / 2.", "",
        "| network | input | latency (ms) | params (M) | MACs (M) | val top-1 |", "|---|---|---|---|---|---|",
        *lines, "", *verdict_lines, "",
        f"Measured but slower than every tier's edge, not trained: {untrained or 'none'}.", "",
        "Produced by `python experiments/bench_table3_cpu.py` (see its docstring).", ""])
    write_text(RESULTS / f"{name}.md", text)
    plot(trained, upper, RESULTS / f"{name}.png")
    print(text)


def plot(trained: list[dict], upper: dict[str, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for family, marker, color in (("timm", "o", "C0"), ("searched", "*", "C3")):
        rows = [t for t in trained if t["family"] == family]
        ax.errorbar([t["latency_ms"] for t in rows], [t["top1_mean"] for t in rows],
                    yerr=[t["top1_std"] for t in rows], fmt=marker, color=color, ms=9 if marker == "*" else 5,
                    capsize=2, label="searched (gpunet)" if family == "searched" else "timm hand-designed")
        for t in rows:
            ax.annotate(label(t).removeprefix("searched "), (t["latency_ms"], t["top1_mean"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
    for tier, edge in upper.items():
        ax.axvline(edge, color="grey", ls=":", lw=1)
        ax.text(edge, ax.get_ylim()[0], f" {tier} edge", fontsize=7, color="grey", rotation=90, va="bottom")
    ax.set(xlabel="measured latency (ms, ONNX Runtime CPU, 1 thread, batch 1)",
           ylabel="val top-1 (mean ± std over 3 seeds)", title="searched vs hand-designed at equal latency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
