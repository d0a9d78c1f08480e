"""Helpers shared by the latency tests (no tests here): a tiny search space and synthetic tables
in temporary directories (their configs: the `compose_cfg` fixture of conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from gpunet.latency.build import LatencySetup
from gpunet.latency.space_keys import reach
from gpunet.latency.table import LatencyTable
from gpunet.latency.timing import Timing
from gpunet.space.search_space import SearchSpace, space_from_config

# Small enough to enumerate every network (3,072), yet it has everything the walk must handle:
# two resolutions, shared filters, fixed and 1-element fields, a stage that can be empty, stride 1
# and 2 stages, repeated layers and SE.
TINY = {
    "name": "tiny",
    "resolutions": [32, 40],
    "head_width": 32,
    "stages": [
        {"block": "conv", "stride": 2, "kernel": 3, "act": "swish", "layers": 1, "filters": [8]},
        {"block": "conv", "stride": 1, "kernel": [3], "act": ["relu", "swish"], "layers": [1, 2],
         "filters": "shared"},
        {"block": "fused_irb", "stride": 2, "filters": [8, 16], "kernel": 3, "expansion": [2],
         "se": [False, True], "act": "relu", "layers": [1, 2]},
        {"block": "irb", "stride": 1, "filters": [16, 24], "kernel": [3, 5], "expansion": 2,
         "se": False, "act": "swish", "layers": [0, 1, 2]},
        {"block": "irb", "stride": 2, "filters": [24], "kernel": 3, "expansion": [2, 3], "se": [False],
         "act": ["relu"], "layers": [1, 2]},
    ],
}
CONTEXT = {"device": "test", "backend": "synthetic"}


def table_inputs(cfg) -> tuple[LatencySetup, SearchSpace]:
    """What an app's edge hands the table functions (build_table, ensure_table): its latency
    setup and search space."""
    return LatencySetup.from_config(cfg), space_from_config(cfg.search_space)


def tiny_space() -> SearchSpace:
    return space_from_config(TINY)


def all_encodings(space: SearchSpace) -> np.ndarray:
    """Every encoding of a (small) space."""
    grids = np.meshgrid(*[np.arange(c) for c in space.cardinalities], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def synthetic_table(path: Path, space: SearchSpace, num_classes: int = 10, seed: int = 0,
                    context: dict | None = None) -> LatencyTable:
    """A real SQLite table holding every key of `space`, with random medians (ms)."""
    table = LatencyTable(path, context or CONTEXT)
    probes = reach(space, num_classes).probes()
    medians = np.random.default_rng(seed).uniform(0.001, 0.2, len(probes))
    table.put_many([(p.key, p.fields(), Timing(float(m), float(m) * 1.2, 7))
                    for p, m in zip(probes, medians)])
    return table


def write_space_dir(tmp_path: Path, space: dict = TINY) -> Path:
    """A --config-dir with search_space/<name>.yaml, for the command-line apps."""
    conf = tmp_path / "conf"
    (conf / "search_space").mkdir(parents=True, exist_ok=True)
    (conf / "search_space" / f"{space['name']}.yaml").write_text(yaml.safe_dump(space))
    return conf
