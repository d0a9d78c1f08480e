"""Searcher overhead: seconds per proposed batch at scale (issue 4, target <= 2 s).

The setting of the issue: a 1,000,000-member pool (Sobol sample of the Table-1 space), 1,000
observations already told (random pool members valued by Ackley), batches of q = 8. Each timed
propose follows the observation of the previous batch, so every call does the full work (GP fit,
partition, region scan, acquisition) on a new history. Writes
experiments/results/searchers_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from gpunet.config import group_choice
from gpunet.search.objectives import make_objective
from gpunet.search.searchers import make_searcher
from gpunet.space import space_from_config
from gpunet.space.sampling import sobol_encodings

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0


def time_searcher(name: str, pool: np.ndarray, card: np.ndarray, args) -> dict:
    """Median/max seconds per propose(q) after `args.observations` observations."""
    cfg = group_choice("searcher", name)
    objective = make_objective("ackley", card)
    searcher = make_searcher(cfg, pool, card, seed=0, budget=args.observations + args.repeats + 1)
    start = np.random.default_rng(0).choice(len(pool), size=args.observations, replace=False)
    searcher.observe(start, objective(pool[start]))
    seconds, diagnostics = [], []
    for _ in range(args.repeats + 1):  # the first call warms up imports and caches
        t0 = time.perf_counter()
        idx = searcher.propose(args.q)
        seconds.append(time.perf_counter() - t0)
        diagnostics.append(dict(searcher.diagnostics))
        searcher.observe(idx, objective(pool[idx]))
    timed = seconds[1:]
    return {
        "searcher": name,
        "config": cfg,
        "seconds": timed,
        "median_s": float(np.median(timed)),
        "max_s": float(np.max(timed)),
        "meets_target": bool(np.median(timed) <= TARGET_S),
        "diagnostics": diagnostics[1:],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pool-size", type=int, default=1_000_000)
    p.add_argument("--observations", type=int, default=1000)
    p.add_argument("--q", type=int, default=8)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--searchers", nargs="+", default=["bo", "lamcts_bo"])
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
    results = [time_searcher(name, pool, card, args) for name in args.searchers]
    report = {
        "setting": {
            "pool_size": args.pool_size,
            "observations": args.observations,
            "q": args.q,
            "repeats": args.repeats,
            "target_s": TARGET_S,
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
        f"start {tuple(round(v, 2) for v in machine['load_average_at_start'])} (shared machine). "
        "Produced by experiments/bench_searcher_overhead.py.",
        "",
        f"| searcher | median s | max s | target <= {TARGET_S:g} s |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['searcher']} | {r['median_s']:.2f} | {r['max_s']:.2f} | "
            f"{'met' if r['meets_target'] else 'NOT met'} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "searchers_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
