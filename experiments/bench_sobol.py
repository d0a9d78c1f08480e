"""Time Sobol sampling of 1,000,000 encodings of the Table-1 space (target: under 2 s)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from gpunet.space import load_space, sobol_encodings

RESULTS = Path(__file__).resolve().parent / "results"


def main(n: int = 1_000_000, repeats: int = 5) -> dict:
    space = load_space("gpunet")
    sobol_encodings(space, 1000)  # warm-up (imports, allocator)
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        sobol_encodings(space, n, seed=seed)
        times.append(time.perf_counter() - start)
    result = {"n": n, "digits": space.length, "repeats": repeats,
              "median_s": sorted(times)[len(times) // 2], "min_s": min(times), "max_s": max(times),
              "target_s": 2.0, "torch": torch.__version__, "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sobol_bench.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "sobol_bench.md").write_text(
        f"# Sobol sampling benchmark\n\n{n:,} encodings x {space.length} digits, "
        f"{repeats} runs on {os.cpu_count()} cores: median **{result['median_s']:.3f} s** "
        f"(min {result['min_s']:.3f}, max {result['max_s']:.3f}); target < 2 s.\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
