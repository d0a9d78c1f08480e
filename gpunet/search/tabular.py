"""Tabular objectives: every network of a small space trained for real, its accuracy a look-up.

A searcher run over one costs seconds, yet its landscape (noise, interactions, plateaus) is that
of real training. An evaluation returns one of the stored training runs of the network, chosen
by a generator seeded with (seed, evaluation number, row), so a run is reproducible and noisy
like real training; regret is measured on the mean over the stored runs.

NAS-Bench-Macro (Su et al., CVPR 2021; Apache-2.0, copyright 2021 Xiu Su) is the first: it lives
in `../shared/benchmarks/nas-bench-macro/` for developers and CI, not in the package, so a user's
clone passes a path (see ../shared/benchmarks/README.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpunet.errors import NotFoundError

NAS_BENCH_MACRO_FILE = "nas-bench-macro/nas_bench_macro_cifar10.json"


@dataclass(frozen=True)
class TabularBenchmark:
    """A pool that is the whole space, with every member's stored runs (accuracy in percent)."""

    name: str
    pool: np.ndarray  # (N, D) integer encodings
    cardinalities: np.ndarray  # (D,)
    runs: np.ndarray  # (N, R) one column per stored training run

    @property
    def mean(self) -> np.ndarray:
        """(N,) mean over the stored runs: what regret is measured on."""
        return self.runs.mean(axis=1)

    @property
    def best_mean(self) -> float:
        return float(self.mean.max())

    def top_threshold(self, fraction: float) -> float:
        """The mean value a row needs to be in the top `fraction` of the pool (ties included)."""
        k = max(1, int(np.ceil(fraction * len(self.pool))))
        return float(np.sort(self.mean)[-k])

    def evaluate(self, indices: np.ndarray, seed: int, first: int) -> np.ndarray:
        """Values of pool rows evaluated as evaluations number first, first + 1, ... of a run
        with `seed`: each one stored run, picked by a generator of (seed, number, row)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        picks = [
            np.random.default_rng([seed, first + k, int(i)]).integers(self.runs.shape[1])
            for k, i in enumerate(indices.tolist())
        ]
        return self.runs[indices, np.asarray(picks, dtype=np.int64)]


def default_benchmarks_dir() -> Path:
    """`../shared/benchmarks` next to the repository holding this package (developers, CI)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


def load_nas_bench_macro(path: str | Path | None = None) -> TabularBenchmark:
    """NAS-Bench-Macro's CIFAR-10 table: 3^8 = 6,561 networks (8 layers, 3 choices each), 3 runs
    each. `path`: the JSON file or a folder holding `nas-bench-macro/` (default: the shared
    benchmarks folder)."""
    path = Path(path) if path is not None else default_benchmarks_dir()
    if path.is_dir():
        path = path / NAS_BENCH_MACRO_FILE
    if not path.is_file():
        raise NotFoundError(
            f"NAS-Bench-Macro not found at {path}; pass the path of nas_bench_macro_cifar10.json "
            "(from github.com/xiusu/NAS-Bench-Macro, data/nas-bench-macro_cifar10.json)"
        )
    table = json.loads(path.read_text())
    keys = sorted(table)
    pool = np.array([[int(c) for c in k] for k in keys], dtype=np.int16)
    runs = np.array([table[k]["test_acc"] for k in keys], dtype=float)
    return TabularBenchmark("nas-bench-macro", pool, np.full(pool.shape[1], 3, dtype=np.int64), runs)
