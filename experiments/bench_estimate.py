"""Benchmark: the vectorised latency estimate of 1,000,000 encodings (target <= 3 s here).

    python experiments/bench_estimate.py [--n 1000000] [--repeats 3]

Times `estimate_encodings` (table read, look-up arrays, the sum) on Sobol samples of the CPU space
and of Table 1, after one warm-up call; reports the median of the repeats, and checks it against
the per-spec path on 1,000 samples (they must agree exactly). The tables are real SQLite files
holding every key of the space with random values: the time of the estimate does not depend on
the values, and Table 1's 133k entries cannot be measured on this machine. Writes
experiments/results/latency_estimate_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gpunet.files import write_json, write_text
from gpunet.latency.estimate import estimate_encodings, estimate_spec
from gpunet.latency.space_keys import reach
from gpunet.latency.table import LatencyTable
from gpunet.latency.timing import Timing
from gpunet.space import encoding_to_spec, load_space, sobol_encodings

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 1000  # the head: ImageNet's classes, as the paper's tables


def synthetic(space, path: Path) -> LatencyTable:
    table = LatencyTable(path, {"device": "synthetic", "backend": "none"})
    probes = reach(space, CLASSES).probes()
    values = np.random.default_rng(0).uniform(0.001, 0.3, len(probes))
    table.put_many([(p.key, p.fields(), Timing(float(v), float(v), 1)) for p, v in zip(probes, values)])
    return table


def bench(space, table: LatencyTable, n: int, repeats: int) -> dict:
    start = time.perf_counter()
    X = sobol_encodings(space, n, seed=0)
    sobol_s = time.perf_counter() - start
    estimate_encodings(space, table, X[:1000], CLASSES)  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        latencies = estimate_encodings(space, table, X, CLASSES)
        times.append(time.perf_counter() - start)
    check = X[np.linspace(0, n - 1, min(n, 1000)).astype(int)]
    per_spec = [estimate_spec(encoding_to_spec(space, x, CLASSES), table) for x in check]
    exact = bool(np.array_equal(estimate_encodings(space, table, check, CLASSES), per_spec))
    return {"space": space.name, "table": str(table.path), "table_entries": len(table),
            "table_context": table.context, "encodings": n, "repeats": repeats,
            "estimate_s_median": statistics.median(times), "estimate_s_all": times,
            "sobol_sampling_s": sobol_s, "encodings_per_s": n / statistics.median(times),
            "latency_ms_range": [float(latencies.min()), float(latencies.max())],
            "per_spec_agrees_exactly_on": len(check) if exact else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cpu", "gpunet"):
            space = load_space(name)
            table = synthetic(space, Path(tmp) / f"{name}.sqlite")
            rows.append(bench(space, table, args.n, args.repeats))
            print(f"{name}: {rows[-1]['estimate_s_median']:.3f} s for {args.n:,} encodings")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_average_before": load_before, "load_average_after": os.getloadavg()}
    write_json(RESULTS / "latency_estimate_bench.json", {"machine": machine, "results": rows})
    lines = [
        "# Vectorised latency estimate: 1,000,000 encodings",
        "",
        f"Machine: {machine['cores']} cores, load average {load_before[0]:.1f} before / "
        f"{machine['load_average_after'][0]:.1f} after (the machine is shared with other jobs). "
        "Time of `estimate_encodings` (read the table, build the look-up arrays, sum), median of "
        f"{args.repeats} runs after a warm-up; Sobol sampling timed separately. Target: <= 3 s.",
        "",
        "| space | table | entries | estimate (s) | encodings/s | Sobol (s) | exact vs per-spec |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['space']} | synthetic values | {r['table_entries']:,} | "
                     f"{r['estimate_s_median']:.3f} | {r['encodings_per_s']:,.0f} | "
                     f"{r['sobol_sampling_s']:.2f} | "
                     f"{r['per_spec_agrees_exactly_on']:,} / 1,000 |")
    write_text(RESULTS / "latency_estimate_bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
