"""Searcher overhead: seconds per proposed batch at scale (issue 12, item 5: target <= 1 s).

The setting of the issue: a 1,000,000-member pool (Sobol sample of the Table-1 space), 1,000
observations already told (random pool members valued by Ackley), batches of q = 8. Each timed
propose follows the observation of the previous batch, so every call does the full work (GP fit,
partition, region scan, acquisition) on a new history. As in a search, the searchers may leave
the pool: the encodings they breed are tested against a tier by the vectorised latency estimate
(a real SQLite table of every key of Table 1 with random values, as bench_estimate.py; the tier is
the middle 20% of the pool's estimates), so the timing includes that test (--pool-only: without).
Writes experiments/results/searchers_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_estimate import CLASSES, synthetic
from omegaconf import OmegaConf

from gpunet.config import group_choice
from gpunet.latency.estimate import EncodingEstimator
from gpunet.search.objectives import make_objective
from gpunet.search.searchers import make_searcher
from gpunet.space import space_from_config
from gpunet.space.sampling import sobol_encodings

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0


def time_searcher(name: str, pool: np.ndarray, card: np.ndarray, args, admissible) -> dict:
    """Median/max seconds per propose(q) after `args.observations` observations."""
    cfg = group_choice("searcher", name)
    objective = make_objective("ackley", card)
    searcher = make_searcher(cfg, pool, card, seed=0, budget=args.observations + args.repeats + 1)
    if admissible is not None:
        searcher.allow_beyond_pool(admissible)
    start = np.random.default_rng(0).choice(len(pool), size=args.observations, replace=False)
    searcher.observe(start, objective(pool[start]))
    seconds, diagnostics = [], []
    for _ in range(args.repeats + 1):  # the first call warms up imports and caches
        t0 = time.perf_counter()
        idx = searcher.propose(args.q)
        seconds.append(time.perf_counter() - t0)
        diagnostics.append(dict(searcher.diagnostics))
        searcher.observe(idx, objective(searcher.pool[idx]))
    timed = seconds[1:]
    return {
        "searcher": name,
        "config": cfg,
        "seconds": timed,
        "median_s": float(np.median(timed)),
        "max_s": float(np.max(timed)),
        "meets_target": bool(np.median(timed) <= TARGET_S),
        "beyond_pool_per_batch": float(np.median([d.get("n_beyond_pool", 0) for d in diagnostics[1:]])),
        "bred_scored_per_batch": float(np.median([d.get("n_bred", 0) for d in diagnostics[1:]])),
        "diagnostics": diagnostics[1:],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pool-size", type=int, default=1_000_000)
    p.add_argument("--observations", type=int, default=1000)
    p.add_argument("--q", type=int, default=8)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--searchers", nargs="+", default=["bo", "lamcts_bo"])
    p.add_argument("--pool-only", action="store_true", help="the searchers stay in the pool")
    p.add_argument("--out", type=Path, default=ROOT / "experiments/results")
    args = p.parse_args()
    space = space_from_config(OmegaConf.load(ROOT / "conf/search_space/gpunet.yaml"))
    card = np.asarray(space.cardinalities)
    pool = sobol_encodings(space, args.pool_size, seed=0)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        table = synthetic(space, Path(tmp) / "table1.sqlite")
        estimate = EncodingEstimator(space, table, CLASSES)  # as the search: look-ups built once
        lo, hi = np.percentile(estimate(pool), [40, 60])

        def in_tier(encodings: np.ndarray) -> np.ndarray:
            latencies = estimate(encodings)
            return (latencies >= lo) & (latencies <= hi)

        admissible = None if args.pool_only else in_tier
        results = [time_searcher(name, pool, card, args, admissible) for name in args.searchers]
    report = {
        "setting": {
            "pool_size": args.pool_size,
            "observations": args.observations,
            "q": args.q,
            "repeats": args.repeats,
            "target_s": TARGET_S,
            "beyond_pool": not args.pool_only,
        },
        "machine": machine,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "searchers_overhead.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# Searcher overhead per proposed batch",
        "",
        f"Pool {args.pool_size:,} encodings (Sobol, Table-1 space), {args.observations:,} "
        f"observations, q = {args.q}, {args.repeats} timed proposes after one warm-up; "
        f"{machine['cores']} cores, torch threads {machine['torch_threads']}, load average at "
        f"start {tuple(round(v, 2) for v in machine['load_average_at_start'])}. "
        + ("The searchers may leave the pool (the default of a search): the new encodings they "
           "breed are tested against a tier (the middle 20% of the pool's estimates) with the "
           "vectorised estimate over a SQLite table of Table 1's keys (random values). "
           if not args.pool_only else "Pool members only (--pool-only). ")
        + "Produced by experiments/bench_searcher_overhead.py.",
        "",
        f"| searcher | median s | max s | target <= {TARGET_S:g} s | bred encodings scored per "
        f"batch (median) | of the {args.q} proposed, beyond the pool (median) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['searcher']} | {r['median_s']:.2f} | {r['max_s']:.2f} | "
            f"{'met' if r['meets_target'] else 'NOT met'} | {r['bred_scored_per_batch']:g} | "
            f"{r['beyond_pool_per_batch']:g} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "searchers_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
