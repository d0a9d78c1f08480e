"""`random`: uniform sampling without replacement over the remaining pool (the baseline)."""

from __future__ import annotations

import numpy as np

from gpunet.search.searchers.base import RANDOM, Searcher, Selection


class RandomSearcher(Searcher):
    """Uniform over the pool; a latency-tier pool is already a Sobol sample of the space."""

    name = "random"

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        return rng.choice(available, size=q, replace=False), RANDOM
