"""Compare the searchers on synthetic objectives inside a pool (issue 4, paper §3.3.1).

Every (searcher, objective, seed, batch size) run spends the same budget of evaluations; the
best value so far after each evaluation is stored per run in experiments/results/
searchers_runs.json as soon as the run ends, so an interrupted experiment resumes where it
stopped. Then the median and inter-quartile band over seeds are plotted and tabulated, and the
issue's targets are checked:

  1. lamcts_bo reaches random's final best within <= budget/4 evaluations (median curves);
  2. lamcts_bo's final best is no worse than bo's (medians over seeds).

Usage:
  python experiments/compare_searchers.py                      # Sobol fallback pool
  python experiments/compare_searchers.py --pool tier_1ms.npy  # an (N, 41) tier pool
  python experiments/compare_searchers.py --beyond-pool --tag beyond_pool  # bo, lamcts_bo and
      # tpe may propose any encoding of the space, not only pool rows (issue 12, item 4)
  python experiments/compare_searchers.py --pool outputs/latency/pools/<tier>.npz \
      --search-space gpunet/conf/search_space/cpu.yaml --beyond-pool \
      --tier-table outputs/latency/cpu-onnxruntime-fp32-b1.sqlite --tier-band 0.9 1.1
      # a search's tier pool, and beyond it only what the tier admits (its latency estimate)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from tqdm import tqdm  # noqa: E402

from gpunet.config import group_choice  # noqa: E402
from gpunet.files import write_text  # noqa: E402
from gpunet.search import objectives  # noqa: E402
from gpunet.search.objectives import make_objective  # noqa: E402
from gpunet.search.searchers import SEARCHERS as REGISTERED  # noqa: E402
from gpunet.search.searchers import code_digest, make_searcher  # noqa: E402
from gpunet.search.searchers.gp import (  # noqa: E402
    build_gp,
    cap_training_set,
    fit_hyperparameters,
    normalise,
)
from gpunet.space import space_from_config  # noqa: E402
from gpunet.space.sampling import sobol_encodings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEARCHERS = ("random", "bo", "lamcts_bo", "evolution")
FALLBACK_POOL_SIZE = 100_000


def load_pool(pool_path: Path | None, space_cfg: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The pool, its cardinalities (from the search-space config) and a line saying what it is."""
    space = space_from_config(OmegaConf.load(space_cfg))
    card = np.asarray(space.cardinalities, dtype=np.int64)
    if pool_path is None:
        pool = sobol_encodings(space, FALLBACK_POOL_SIZE, seed=0)
        what = (
            f"NOT a latency tier pool: no --pool given, so a fallback Sobol sample of "
            f"{FALLBACK_POOL_SIZE:,} encodings (scrambled, seed 0) of {space_cfg.name}"
        )
        return pool, card, what
    pool = np.load(pool_path)
    if isinstance(pool, np.lib.npyio.NpzFile):  # a search's cached tier pool (tier_pool)
        pool = pool["encodings"]
    return pool, card, f"tier pool {pool_path} ({len(pool):,} encodings, space {space_cfg.name})"


def tier_test(space_cfg: Path, table_path: Path, band: list[float], num_classes: int):
    """The tier's admission test as a search makes it: the estimate from this latency table
    lies in the band (a picklable callable, for the parallel runs)."""
    from gpunet.latency.estimate import EncodingEstimator
    from gpunet.latency.stratify import Tier
    from gpunet.latency.table import LatencyTable, stored_contexts

    space = space_from_config(OmegaConf.load(space_cfg))
    (stored, *others) = stored_contexts(table_path)  # a search's table holds one context
    if others:
        raise SystemExit(f"{table_path} holds {1 + len(others)} contexts; give a single-context table")
    estimate = EncodingEstimator(space, LatencyTable(table_path, stored.context), num_classes)
    lo, hi = band
    tier = Tier("band", (lo + hi) / 2, (hi - lo) / 2)

    def admits(encodings: np.ndarray) -> np.ndarray:
        return tier.holds(estimate(encodings))

    return admits


def fingerprint(*parts: Any) -> str:
    """Identity of a run's inputs, so cached runs are reused only for the same experiment."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return digest.hexdigest()[:16]


def gp_rank_quality(searcher, objective, rng: np.random.Generator, n_probe: int = 2000) -> float:
    """Spearman correlation between a GP fitted like the searcher's and the true values on
    random pool members: how well the model ranks the pool after the run."""
    idx, values = searcher.observed()
    train = cap_training_set(values, searcher.gp.max_train, rng)
    x, y = normalise(searcher.pool[idx[train]], searcher.cardinalities), values[train]
    kernel = searcher.gp.kernel
    model = build_gp(x, y, fit_hyperparameters(x, y, searcher.gp.fit_maxiter, seed=0, kernel=kernel), kernel)
    probe = rng.choice(len(searcher.pool), size=min(n_probe, len(searcher.pool)), replace=False)
    with torch.no_grad():
        mean = model.posterior(torch.as_tensor(normalise(searcher.pool[probe], searcher.cardinalities)))
    return float(spearmanr(mean.mean.squeeze(-1).numpy(), objective(searcher.pool[probe])).statistic)


def run_one(
    pool: np.ndarray,
    card: np.ndarray,
    searcher_cfg: dict,
    objective_cfg: dict,
    seed: int,
    q: int,
    budget: int,
    beyond_pool: bool = False,
    tier: tuple | None = None,
) -> dict[str, Any]:
    """One search: best-so-far after each evaluation, wall time and what the searcher did.
    `beyond_pool`: the searcher may also propose encodings outside the pool: those the tier
    admits (`tier`: the arguments of `tier_test`), or any of the space."""
    objective = make_objective(objective_cfg, card)
    searcher = make_searcher(searcher_cfg, pool, card, seed, budget=budget)
    if beyond_pool:
        searcher.allow_beyond_pool(tier_test(*tier) if tier else
                                   lambda encodings: np.ones(len(encodings), dtype=bool))
    indices, values, trace, seconds = drive(
        searcher, lambda idx, first: objective(searcher.pool[idx]), budget, q)
    out: dict[str, Any] = {
        "best_so_far": np.maximum.accumulate(values).tolist(),
        "seconds": seconds,
        "modes": dict(Counter(d.get("mode", "none") for d in trace)),
        "beyond_pool": int((np.asarray(indices) >= searcher.n_base).sum()),
    }
    if "n_init" in searcher_cfg:
        out["gp_spearman"] = gp_rank_quality(searcher, objective, np.random.default_rng(seed))
    tree = [d for d in trace if "path_depth" in d]
    if tree:
        out["tree"] = {
            "path_depth": [d["path_depth"] for d in tree],
            "level_used": [d["level_used"] for d in tree],
            "region_fraction": [d["region_fraction"] for d in tree],
            "leaf_samples": [d["leaf_samples"] for d in tree],
        }
    return out


def drive(
    searcher, evaluate: Callable[[np.ndarray, int], np.ndarray], budget: int, q: int
) -> tuple[list[int], list[float], list[dict[str, Any]], float]:
    """Ask/tell until `budget` evaluations: `evaluate(indices, first)` values pool rows evaluated
    as evaluations number first, first + 1, ... Returns the indices and values in evaluation
    order, each propose's diagnostics and the wall time."""
    torch.set_num_threads(1)  # runs share the cores; threads only add contention
    indices: list[int] = []
    values: list[float] = []
    trace: list[dict[str, Any]] = []
    start = time.perf_counter()
    while searcher.n_observed < budget:
        idx = searcher.propose(min(q, budget - searcher.n_observed))
        trace.append({**searcher.diagnostics, "proposers": list(searcher.proposers)})
        batch = np.asarray(evaluate(idx, searcher.n_observed), dtype=float)
        searcher.observe(idx, batch)
        indices += idx.tolist()
        values += batch.tolist()
    return indices, values, trace, time.perf_counter() - start


def _run_keyed(key: str, fp: str, run: Callable[..., dict], args: tuple) -> tuple[str, str, dict[str, Any]]:
    """`run(*args)`, tagged with its cache key, so results can be saved in completion order."""
    return key, fp, run(*args)


def cached_runs(
    cache_path: Path,
    tasks: dict[str, tuple[str, Callable[..., dict], tuple]],
    jobs: int,
    run_missing: bool = True,
) -> dict[str, dict[str, Any]]:
    """Results of `tasks` (key -> (fingerprint, run, args)): a cached result whose fingerprint
    matches is reused; the others run in parallel, in the tasks' order, and each is written to the
    cache as soon as it ends, so an interrupted experiment resumes where it stopped (with
    `run_missing` False: only the cached results, to report on a partial experiment)."""
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    runs = {k: cache[k] for k, (fp, _, _) in tasks.items() if cache.get(k, {}).get("fingerprint") == fp}
    todo = [delayed(_run_keyed)(k, fp, run, args) for k, (fp, run, args) in tasks.items() if k not in runs]
    todo = todo if run_missing else []
    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(todo)
    for key, fp, result in tqdm(results, total=len(todo), desc="runs", unit="run"):
        runs[key] = {**result, "fingerprint": fp}
        # re-read before writing: runs another process (a second invocation) saved meanwhile stay
        cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        write_text(cache_path, json.dumps({**cache, key: runs[key]}))
    return runs


def evals_to_reach(curve: np.ndarray, target: float) -> int | None:
    """First evaluation count at which `curve` reaches `target` (None: never)."""
    hits = np.flatnonzero(curve >= target)
    return int(hits[0]) + 1 if hits.size else None


def summarise(runs: dict, args, pool_line: str, pool_values: dict[str, np.ndarray]) -> str:
    """Markdown report + CSV table + PNG plots; returns the markdown."""
    pool_max = {o: float(v.max()) for o, v in pool_values.items()}
    quarter = args.budget // 4
    rows, verdicts, diag = [], [], []
    for q in args.batch_sizes:
        fig, axes = plt.subplots(1, len(args.objectives), figsize=(5 * len(args.objectives), 4))
        for ax, obj in zip(np.atleast_1d(axes), args.objectives, strict=True):
            curves = {
                s: np.array([runs[run_key(s, obj, seed, q)]["best_so_far"] for seed in args.seeds])
                for s in args.searchers
            }
            med = {s: np.median(c, axis=0) for s, c in curves.items()}
            random_final = med["random"][-1] if "random" in med else None
            for s, c in curves.items():
                lo, hi = np.percentile(c, [25, 75], axis=0)
                n = np.arange(1, c.shape[1] + 1)
                style = {"color": "black", "ls": "--"} if s == "random" else {}
                (line,) = ax.plot(n, med[s], label=s, **style)
                ax.fill_between(n, lo, hi, color=line.get_color(), alpha=0.15)
                finals = c[:, -1]
                reach = evals_to_reach(med[s], random_final) if random_final is not None else None
                seconds = [runs[run_key(s, obj, seed, q)]["seconds"] for seed in args.seeds]
                rows.append(
                    {
                        "objective": obj,
                        "q": q,
                        "searcher": s,
                        "median_final": float(np.median(finals)),
                        "iqr_final": float(np.subtract(*np.percentile(finals, [75, 25]))),
                        "evals_to_random_final": reach,
                        "median_run_s": float(np.median(seconds)),
                        "above_pool_max": int((finals > pool_max[obj]).sum()),
                        "beyond_pool": int(np.median([runs[run_key(s, obj, seed, q)].get(
                            "beyond_pool", 0) for seed in args.seeds])),
                    }
                )
            if random_final is not None:
                ax.axhline(random_final, color="grey", ls=":", lw=1)
                ax.axvline(quarter, color="grey", ls="--", lw=1)
            ax.set_title(f"{obj} (pool max {pool_max[obj]:.4g}), q={q}")
            ax.set_xlabel("evaluations")
            ax.set_ylabel("best so far (negated function)")
            early = min(np.percentile(c[:, c.shape[1] // 10], 25) for c in curves.values())
            top = max(pool_max[obj], *(c.max() for c in curves.values()))
            ax.axhline(pool_max[obj], color="red", ls=":", lw=1, label="pool max")
            ax.set_ylim(early, top + 0.02 * (top - early))
            if {"random", "bo", "lamcts_bo"} <= set(curves):
                reach = evals_to_reach(med["lamcts_bo"], random_final)
                per_seed = {
                    s: [evals_to_reach(c, random_final) for c in curves[s]] for s in ("bo", "lamcts_bo")
                }
                verdicts.append(
                    {
                        "objective": obj,
                        "q": q,
                        "random_final_top": float(np.mean(pool_values[obj] >= random_final)),
                        "lamcts_evals_to_random_final": reach,
                        "lamcts_per_seed": per_seed["lamcts_bo"],
                        "bo_per_seed": per_seed["bo"],
                        "lamcts_wins": int((curves["lamcts_bo"][:, -1] > curves["bo"][:, -1]).sum()),
                        "ties": int((curves["lamcts_bo"][:, -1] == curves["bo"][:, -1]).sum()),
                        "target1": reach is not None and reach <= quarter,
                        "lamcts_final": float(med["lamcts_bo"][-1]),
                        "bo_final": float(med["bo"][-1]),
                        "target2": bool(med["lamcts_bo"][-1] >= med["bo"][-1]),
                    }
                )
            for s in ("bo", "lamcts_bo"):
                if s in curves:
                    diag.append(diagnose(runs, s, obj, q, args.seeds))
        np.atleast_1d(axes)[0].legend()
        fig.suptitle(
            textwrap.fill(f"Best so far, median and IQR over {len(args.seeds)} seeds; {pool_line}", 180),
            fontsize=8,
        )
        fig.tight_layout()
        fig.savefig(args.out / f"{args.prefix}best_so_far_q{q}.png", dpi=120)
        plt.close(fig)
    write_csv(args.out / f"{args.prefix}comparison.csv", rows)
    return render_markdown(args, pool_line, pool_max, rows, verdicts, diag)


def diagnose(runs: dict, s: str, obj: str, q: int, seeds: list[int]) -> dict[str, Any]:
    """Why lamcts_bo does what it does: tree depth, region sizes, back-offs, GP quality."""
    rs = [runs[run_key(s, obj, seed, q)] for seed in seeds]
    out: dict[str, Any] = {"searcher": s, "objective": obj, "q": q}
    out["gp_spearman"] = float(np.median([r["gp_spearman"] for r in rs]))
    modes = Counter()
    for r in rs:
        modes.update(r["modes"])
    out["modes"] = dict(modes)
    trees = [r["tree"] for r in rs if "tree" in r]
    if trees:
        depth = np.concatenate([t["path_depth"] for t in trees])
        level = np.concatenate([t["level_used"] for t in trees])
        frac = np.concatenate([t["region_fraction"] for t in trees])
        out.update(
            median_path_depth=float(np.median(depth)),
            max_path_depth=int(depth.max()),
            backoff_share=float(np.mean(level < depth)),
            region_fraction_median=float(np.median(frac)),
            region_fraction_q10_q90=[float(v) for v in np.percentile(frac, [10, 90])],
        )
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join("" if r[h] is None else str(r[h]) for h in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def render_markdown(args, pool_line, pool_max, rows, verdicts, diag) -> str:
    fmt = lambda v: "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    out = [
        "# Searcher comparison on synthetic objectives",
        "",
        f"**Pool: {pool_line}.**",
        "",
        f"Budget {args.budget} evaluations; seeds {args.seeds}; batch sizes {args.batch_sizes}; "
        "values are negated functions (maximised); searcher knobs from conf/searcher/*.yaml, "
        "objectives from conf/objective/*.yaml. Produced by experiments/compare_searchers.py.",
        "",
        "## Targets (medians over seeds)",
        "",
        "Target 1 reads the median best-so-far curves; the per-seed columns give, for each seed, "
        "the evaluations at which that run first reached random's median final best (— = never). "
        "Target 2 compares medians; the paired column counts seeds where lamcts_bo ended above bo "
        "(both start from the same random initial samples of that seed).",
        "",
        f"| objective | q | random's final = pool top | lamcts_bo evals to random's final "
        f"(target <= {args.budget // 4}) | met | per seed: lamcts_bo | per seed: bo "
        "| lamcts_bo final | bo final | met (lamcts_bo >= bo) | lamcts_bo > bo, paired |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        seeds = {s: ", ".join(fmt(n) for n in v[f"{s}_per_seed"]) for s in ("lamcts", "bo")}
        tied = f" ({v['ties']} tied)" if v["ties"] else ""
        out.append(
            f"| {v['objective']} | {v['q']} | {v['random_final_top']:.2%} | "
            f"{fmt(v['lamcts_evals_to_random_final'])} | {'yes' if v['target1'] else 'NO'} | "
            f"{seeds['lamcts']} | {seeds['bo']} | {fmt(v['lamcts_final'])} | {fmt(v['bo_final'])} "
            f"| {'yes' if v['target2'] else 'NO'} | {v['lamcts_wins']} of {len(args.seeds)}{tied} |"
        )
    out += [
        "",
        "## All searchers",
        "",
        "| objective (pool max) | q | searcher | median final best | IQR | evals to random's "
        "final (median curve) | median run s | seeds ending above the pool max | proposals "
        "beyond the pool (median per run) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['objective']} ({pool_max[r['objective']]:.4g}) | {r['q']} | {r['searcher']} | "
            f"{fmt(r['median_final'])} | {fmt(r['iqr_final'])} | "
            f"{fmt(r['evals_to_random_final'])} | {r['median_run_s']:.1f} | "
            f"{r['above_pool_max']} of {len(args.seeds)} | {r['beyond_pool']} |"
        )
    out += [
        "",
        "## Diagnostics of the model-based searchers",
        "",
        "gp_spearman: rank correlation, on 2,000 random pool members, between the true values and "
        "a GP fitted (as in the searcher) to the run's observations (median over seeds). "
        "Tree columns: depth of the UCB path, share of proposals whose leaf region held fewer "
        "than q members (back-off to an ancestor), and the leaf region's fraction of the pool.",
        "",
        "| searcher | objective | q | gp_spearman | median depth | max depth | back-off share "
        "| region fraction median (q10-q90) | modes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in diag:
        band = d.get("region_fraction_q10_q90")
        out.append(
            f"| {d['searcher']} | {d['objective']} | {d['q']} | {d['gp_spearman']:.3f} | "
            f"{fmt(d.get('median_path_depth'))} | {fmt(d.get('max_path_depth'))} | "
            f"{fmt(d.get('backoff_share'))} | "
            + (f"{d['region_fraction_median']:.3g} ({band[0]:.2g}-{band[1]:.2g})" if band else "—")
            + f" | {d['modes']} |"
        )
    return "\n".join(out) + "\n"


def run_key(searcher: str, objective: str, seed: int, q: int) -> str:
    return f"{searcher}|{objective}|seed{seed}|q{q}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pool", type=Path, help="(N, 41) integer .npy tier pool; default: Sobol")
    p.add_argument(
        "--search-space",
        type=Path,
        default=ROOT / "conf/search_space/gpunet.yaml",
        help="search-space config giving the cardinalities of the pool's digits",
    )
    p.add_argument("--searchers", nargs="+", default=list(SEARCHERS), choices=sorted(REGISTERED))
    p.add_argument("--objectives", nargs="+", default=["ackley", "levy", "styblinski_tang"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 1])
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--jobs", type=int, default=2, help="parallel runs (processes)")
    p.add_argument("--pool-note", default="", help="how the pool was made, for the report header")
    p.add_argument("--beyond-pool", action="store_true",
                   help="let the searchers propose any encoding of the space, not only pool rows")
    p.add_argument("--tier-table", type=Path, help="with --beyond-pool: admit only encodings "
                   "whose estimate with this latency table lies in --tier-band")
    p.add_argument("--tier-band", type=float, nargs=2, metavar=("LO_MS", "HI_MS"))
    p.add_argument("--num-classes", type=int, default=10, help="the head the estimate assumes")
    p.add_argument("--tag", default="", help="output names become searchers_<tag>_*")
    p.add_argument("--out", type=Path, default=ROOT / "experiments/results")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pool, card, pool_line = load_pool(args.pool, args.search_space)
    pool_line += f"; {args.pool_note}" if args.pool_note else ""
    tier = None
    if args.tier_table:
        if not (args.beyond_pool and args.tier_band):
            raise SystemExit("--tier-table needs --beyond-pool and --tier-band LO_MS HI_MS")
        tier = (args.search_space, args.tier_table, args.tier_band, args.num_classes)
    if args.beyond_pool:
        pool_line += ("; --beyond-pool: bo and lamcts_bo may also propose "
                      + (f"encodings whose estimate ({args.tier_table.name}, {args.num_classes} "
                         f"classes) lies in {args.tier_band[0]}-{args.tier_band[1]} ms"
                         if tier else "any encoding of the space")
                      + " (children of their best observations), tpe its own samples, so they "
                      "can pass the pool's best")
    args.prefix = f"searchers_{args.tag}_" if args.tag else "searchers_"
    cfgs = {
        s: group_choice("searcher", s) for s in args.searchers
    }
    objs = {
        o: group_choice("objective", o) for o in args.objectives
    }
    pool_values = {o: make_objective(objs[o], card)(pool) for o in args.objectives}
    # the searchers' and objectives' code is part of the key: a code change re-runs everything
    pool_id = fingerprint(pool, card, code_digest(), Path(objectives.__file__).read_bytes())
    grid = [(s, o, seed, q) for s in args.searchers for o in args.objectives for seed in args.seeds
            for q in args.batch_sizes]
    # Slowest first (one GP step per evaluation) so that the workers finish together.
    grid.sort(key=lambda t: (t[0] not in ("bo", "lamcts_bo"), t[3] != 1))
    tasks = {
        run_key(s, o, seed, q): (
            fingerprint(pool_id, cfgs[s], objs[o], seed, q, args.budget, args.beyond_pool, tier),
            run_one,
            (pool, card, cfgs[s], objs[o], seed, q, args.budget, args.beyond_pool, tier),
        )
        for s, o, seed, q in grid
    }
    runs = cached_runs(args.out / f"{args.prefix}runs.json", tasks, args.jobs)
    report = summarise(runs, args, pool_line, pool_values)
    (args.out / f"{args.prefix}comparison.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
