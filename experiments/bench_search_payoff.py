"""Does the search pay off? lamcts_bo vs random on the default task and tier (issue 11, item 4).

For each seed, two real default searches (`python -m gpunet.search`, the README's main command)
that differ only in the searcher: lamcts_bo and random, with the same budget (search.n_trials),
pool, data, recipe and training seed. Reports per seed the best validation top-1 each found, and,
to remove selection luck (a best is partly the luckiest training), the mean top-1 of its network
re-trained with 3 other seeds. Target: lamcts_bo ahead in >= 4 of 5 seeds, and its median gain
larger than the spread of one candidate's top-1 across seeds (the seed spread of
experiments/results/data_signal.json for the default data).

A search resumes from its journal when this is re-run; re-trainings are cached. Writes
experiments/results/search_payoff.{json,md,png}. Runs alone (searches use both cores):

    python experiments/bench_search_payoff.py --seeds 0 1 2 3 4    # ~10 searches of ~5 min
    python experiments/bench_search_payoff.py --report

The re-trainings above are the search's own 3-epoch training, whose seeds spread by 0.02-0.03.
`--longer` re-trains the bests recorded in search_payoff.json (no search runs) with a longer
training that seeds agree on: LONGER, 10 epochs with the gradient clipped (against it the proxy
ranks tier candidates at Spearman 0.9, experiments/results/proxy_rank_digits_ref_clip.md), and
writes search_payoff_longer.{json,md}:

    python experiments/bench_search_payoff.py --longer            # 30 trainings of ~45 s
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_data_signal import pooled_std  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from gpunet.console import setup as setup_console  # noqa: E402
from gpunet.files import save_figure, write_json, write_text  # noqa: E402
from gpunet.paths import CONF_DIR  # noqa: E402
from gpunet.space.encoding import encoding_to_spec  # noqa: E402
from gpunet.space.search_space import space_from_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SEARCHERS = ("random", "lamcts_bo")
RETRAIN_SEEDS = (101, 102, 103)
LONGER = ["recipe.epochs=10", "recipe.clip_grad=1.0"]  # bench_proxy_rank's 10ep_clip reference


def search_dir(work: Path, searcher: str, seed: int) -> Path:
    return work / f"{searcher}-s{seed}"


def run_search(work: Path, searcher: str, seed: int, overrides: list[str]) -> None:
    """One default search (resumes from its journal when its directory has one)."""
    cmd = [sys.executable, "-m", "gpunet.search", f"searcher={searcher}", f"seed={seed}",
           f"hydra.sweep.dir={search_dir(work, searcher, seed)}", "hub.add=false", *overrides]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "GPUNET_HUB_DIR": str(work / "hub")})


def trials(directory: Path) -> list[dict]:
    with open(directory / "results.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["number"]))


def best_so_far(rows: list[dict]) -> list[float]:
    """Best completed top-1 after each trial (pruned trials stopped early: their top-1 is partial)."""
    best, out = float("nan"), []
    for r in rows:
        if r["status"] == "completed":
            best = float(r["value"]) if np.isnan(best) else max(best, float(r["value"]))
        out.append(best)
    return out


def retrain(encoding: list[int], seed: int, work: Path, overrides: list[str]) -> float:
    """The search's training of `encoding` with another seed (cached), its best val top-1."""
    from gpunet.train.run import fit_candidate

    key = hashlib.sha256(json.dumps([encoding, overrides]).encode()).hexdigest()[:12]
    run_dir = work / "retrain" / f"{key}-s{seed}"
    cached = run_dir / "result.json"
    if not cached.is_file():
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("search", overrides=[f"seed={seed}", "trainer.enable_progress_bar=false",
                                               *overrides])
        spec = encoding_to_spec(space_from_config(cfg.search_space), encoding)
        result = fit_candidate(cfg, spec, run_dir)
        write_json(cached, {"encoding": encoding, "seed": seed, "best_top1": result.best_top1,
                            "status": result.status})
    return float(json.loads(cached.read_text())["best_top1"])


def seed_spread() -> tuple[dict, str]:
    """The top-1 std across seeds on the default data (bench_data_signal's figures): of one
    candidate (the issue's yardstick) and pooled over several (the steadier estimate)."""
    path = RESULTS / "data_signal.json"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        data = compose("search").data.name
    if not path.is_file():
        return {}, data
    summary = json.loads(path.read_text())["summary"].get(data) or {}
    pooled = f"pooled over {summary.get('pooled_candidates')} candidates"
    return {"one candidate": summary.get("seeds_std"), pooled: summary.get("pooled_seeds_std")}, data


def report(work: Path, seeds: list[int], overrides: list[str], threads: int) -> None:
    per_seed, curves = [], {s: [] for s in SEARCHERS}
    for seed in seeds:
        row = {"seed": seed}
        for searcher in SEARCHERS:
            d = search_dir(work, searcher, seed)
            if not (d / "results.csv").is_file():
                break
            rows = trials(d)
            done = [r for r in rows if r["status"] == "completed"]
            best = max(done, key=lambda r: float(r["value"]))
            encoding = [int(x) for x in best["encoding"].split("-")]
            torch.set_num_threads(threads)
            again = [retrain(encoding, s, work, overrides) for s in RETRAIN_SEEDS]
            curves[searcher].append(best_so_far(rows))
            row[searcher] = {"best_top1": float(best["value"]), "trial": int(best["number"]),
                             "encoding": encoding, "est_latency_ms": float(best["est_latency_ms"]),
                             "retrained_top1": again, "retrained_mean": float(np.mean(again)),
                             "trials": len(rows), "by_model": sum(r["proposer"] == "model" for r in rows),
                             # where the search sends its trials, less luck-bound than one best
                             "mean_top1": float(np.mean([float(r["value"]) for r in done]))}
        else:
            per_seed.append(row)
    spread, data = seed_spread()
    gains = np.array([r["lamcts_bo"]["best_top1"] - r["random"]["best_top1"] for r in per_seed])
    regains = np.array([r["lamcts_bo"]["retrained_mean"] - r["random"]["retrained_mean"] for r in per_seed])
    out = {"seeds": [r["seed"] for r in per_seed], "data": data, "overrides": overrides,
           "per_seed": per_seed, "wins": int((gains > 0).sum()), "ties": int((gains == 0).sum()),
           "median_gain": float(np.median(gains)) if len(gains) else None,
           "retrained_wins": int((regains > 0).sum()),
           "retrained_median_gain": float(np.median(regains)) if len(regains) else None,
           "mean_top1_wins": sum(r["lamcts_bo"]["mean_top1"] > r["random"]["mean_top1"] for r in per_seed),
           "seed_spread": spread}
    write_json(RESULTS / "search_payoff.json", out)
    lines = [f"| {r['seed']} | {r['random']['best_top1']:.4f} | {r['lamcts_bo']['best_top1']:.4f} | "
             f"{r['lamcts_bo']['best_top1'] - r['random']['best_top1']:+.4f} | "
             f"{r['random']['retrained_mean']:.4f} | {r['lamcts_bo']['retrained_mean']:.4f} | "
             f"{r['lamcts_bo']['retrained_mean'] - r['random']['retrained_mean']:+.4f} | "
             f"{r['lamcts_bo']['by_model']}/{r['lamcts_bo']['trials']} | "
             f"{r['random']['mean_top1']:.4f} / {r['lamcts_bo']['mean_top1']:.4f} |" for r in per_seed]
    n = len(per_seed)
    spread_words = ", ".join(f"{k} {v:.4f}" for k, v in spread.items() if v is not None) or "not measured"
    text = "\n".join([
        "# Does the search pay off? lamcts_bo vs random (issue 11, item 4)", "",
        f"The default search (data {data}, the 1 ms tier of the CPU space, recipe=proxy"
        f"{', ' + ' '.join(overrides) if overrides else ''}), once per searcher and seed; same pool, "
        f"budget and training seed within a seed. Best = the best completed trial's val top-1; "
        f"re-trained = the mean top-1 of that network trained again with seeds {list(RETRAIN_SEEDS)}.", "",
        "| seed | random best | lamcts_bo best | gain | random re-trained | lamcts_bo re-trained | gain "
        "| lamcts_bo trials by its model | mean top-1 of all trials (random / lamcts_bo) |",
        "|---|---|---|---|---|---|---|---|---|", *lines, "",
        f"- best: lamcts_bo ahead in **{out['wins']} of {n}** seeds ({out['ties']} ties), median gain "
        f"**{out['median_gain']:+.4f}**" if n else "- no seed finished",
        f"- re-trained: lamcts_bo ahead in {out['retrained_wins']} of {n}, median gain "
        f"{out['retrained_median_gain']:+.4f}" if n else "",
        f"- mean top-1 of a search's completed trials: lamcts_bo ahead in {out['mean_top1_wins']} of {n}"
        if n else "",
        f"- seed spread (std of one network's top-1 over 3 seeds, data_signal.json): {spread_words}", "",
        "Target: ahead in >= 4 of 5 seeds and a median gain above the seed spread.", "",
        "Produced by `python experiments/bench_search_payoff.py` (see its docstring).", ""])
    write_text(RESULTS / "search_payoff.md", text)
    plot(per_seed, curves)
    print(text)


def report_longer(work: Path, threads: int) -> None:
    """Re-train search_payoff.json's bests with LONGER (seeds RETRAIN_SEEDS) and compare."""
    saved = json.loads((RESULTS / "search_payoff.json").read_text())
    overrides = [*saved["overrides"], *LONGER]
    torch.set_num_threads(threads)
    rows, gains = [], []
    for r in saved["per_seed"]:
        means = {}
        for searcher in SEARCHERS:
            tops = [retrain(r[searcher]["encoding"], s, work, overrides) for s in RETRAIN_SEEDS]
            r[searcher]["longer_top1"], means[searcher] = tops, float(np.mean(tops))
        gains.append(means["lamcts_bo"] - means["random"])
        cells = [f"trial {r[k]['trial']}: {' / '.join(f'{v:.4f}' for v in r[k]['longer_top1'])} "
                 f"({means[k]:.4f})" for k in SEARCHERS]
        rows.append(f"| {r['seed']} | {' | '.join(cells)} | {gains[-1]:+.4f} |")
    spread = pooled_std([r[s]["longer_top1"] for r in saved["per_seed"] for s in SEARCHERS])
    gains = np.array(gains)
    out = {"overrides": overrides, "seeds": RETRAIN_SEEDS, "per_seed": saved["per_seed"],
           "wins": int((gains > 0).sum()), "ties": int((gains == 0).sum()),
           "median_gain": float(np.median(gains)), "seed_spread_pooled": spread}
    write_json(RESULTS / "search_payoff_longer.json", out)
    text = "\n".join([
        "# Does the search pay off? The bests re-trained longer (issue 11, item 4)", "",
        f"The best network of each search in search_payoff.md (data {saved['data']}), trained again "
        f"with {' '.join(overrides)} (10 epochs instead of the search's 3, gradient norm clipped at 1: "
        f"a training that seeds agree on), seeds {list(RETRAIN_SEEDS)}; val top-1 by seed (mean).", "",
        "| seed | random's best | lamcts_bo's best | gain of the means |", "|---|---|---|---|", *rows, "",
        f"- lamcts_bo ahead in **{out['wins']} of {len(gains)}** seeds ({out['ties']} ties), median gain "
        f"**{out['median_gain']:+.4f}**",
        f"- seed spread of this training (std over its 3 seeds, pooled over the {2 * len(gains)} networks): "
        f"{spread:.4f}", "",
        "Target: ahead in >= 4 of 5 seeds and a median gain above the seed spread.", "",
        "Produced by `python experiments/bench_search_payoff.py --longer` (see its docstring).", ""])
    write_text(RESULTS / "search_payoff_longer.md", text)
    print(text)


def plot(per_seed: list[dict], curves: dict[str, list[list[float]]]) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, searcher in enumerate(SEARCHERS):
        if not curves[searcher]:
            continue
        length = min(map(len, curves[searcher]))
        arr = np.array([c[:length] for c in curves[searcher]])
        x = np.arange(1, length + 1)
        left.plot(x, np.nanmedian(arr, 0), color=f"C{i}", label=f"{searcher} (median of {len(arr)})")
        left.fill_between(x, np.nanmin(arr, 0), np.nanmax(arr, 0), color=f"C{i}", alpha=0.15)
    left.set(xlabel="trials", ylabel="best completed val top-1",
             title="best so far (band: min-max over seeds)")
    left.legend(fontsize=8)
    seeds = [r["seed"] for r in per_seed]
    for i, searcher in enumerate(SEARCHERS):
        x = np.arange(len(seeds)) + (i - 0.5) * 0.35
        right.bar(x, [r[searcher]["best_top1"] for r in per_seed], 0.35, color=f"C{i}", alpha=0.5,
                  label=f"{searcher}: best")
        for xi, r in zip(x, per_seed):
            right.scatter([xi] * len(RETRAIN_SEEDS), r[searcher]["retrained_top1"], color=f"C{i}",
                          marker="x", s=20)
    right.set_xticks(np.arange(len(seeds)), [f"seed {s}" for s in seeds])
    values = [v for r in per_seed for s in SEARCHERS for v in [r[s]["best_top1"], *r[s]["retrained_top1"]]]
    if values:
        right.set_ylim(min(values) - 0.02, max(values) + 0.01)
    right.set(ylabel="val top-1", title="best per seed (bars) and its re-trainings (x)")
    right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, RESULTS / "search_payoff.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_search_payoff")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the re-trainings")
    parser.add_argument("--report", action="store_true", help="only report the searches that finished")
    parser.add_argument("--run", nargs="+", choices=SEARCHERS, default=list(SEARCHERS),
                        help="run only these searchers' searches (the others must be in --work)")
    parser.add_argument("--longer", action="store_true",
                        help="re-train search_payoff.json's bests with LONGER instead (no search runs)")
    parser.add_argument("overrides", nargs="*", help="more overrides for every search and re-training")
    args = parser.parse_args()
    setup_console()
    if args.longer:
        report_longer(args.work, args.threads)
        return
    if not args.report:
        for seed in args.seeds:
            for searcher in args.run:
                run_search(args.work, searcher, seed, args.overrides)
    report(args.work, args.seeds, args.overrides, args.threads)


if __name__ == "__main__":
    main()
