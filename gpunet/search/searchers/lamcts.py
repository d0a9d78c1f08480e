"""`lamcts_bo`: LA-MCTS partition of the observations, then the `bo` step inside the chosen region."""

from __future__ import annotations

import numpy as np

from gpunet.search.searchers.base import FALLBACK, MODEL, Selection
from gpunet.search.searchers.bo import BOSearcher
from gpunet.search.searchers.gp import normalise
from gpunet.search.searchers.partition import PartitionSettings, Step, depth_reached, select_path


class LAMCTSSearcher(BOSearcher):
    """LA-MCTS-boosted BO (the paper's §3.3.1 searcher) over a pool.

    Knobs are the fields of `GPSettings` and `PartitionSettings`. Each propose: random pool
    members until `n_init` values are known; then rebuild the partition from all observations,
    pick a leaf by UCB, collect pool members that every SVM on the path puts on the chosen side
    (a random sample of at most `max_scan` pool rows is scanned, vectorised, stopping once
    `screened_per_row` x q, or `n_candidates`, or q are found), and let the GP step choose the
    batch among them. If the leaf's
    region holds fewer than q proposable members, the region of the deepest ancestor on the
    path that holds q is used instead (at the root: the whole pool): its rows are `fallback`.
    Encodings bred beyond the pool (when allowed) are kept only inside the region used.
    """

    name = "lamcts_bo"
    extra_settings = (PartitionSettings,)

    @property
    def partition(self) -> PartitionSettings:
        return self.extra[0]

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        idx, values = self.observed()
        if idx.size < self.gp.n_init or np.ptp(values) == 0:
            return self._choose_by_gp(q, available, rng)  # random, and says why
        scaled = (values - values.min()) / np.ptp(values)
        x = normalise(self.pool[idx], self.cardinalities)
        path = select_path(x, scaled, self.partition, seed=int(rng.integers(2**31)))
        members = self._region(path, available, q, rng)
        level = self.diagnostics["level_used"]  # len(path): the leaf, else an ancestor's region

        def in_region(encodings: np.ndarray) -> np.ndarray:
            return depth_reached(path, normalise(encodings, self.cardinalities)) >= level

        return self._choose_by_gp(q, members, rng, MODEL if level == len(path) else FALLBACK,
                                  region=in_region)

    def _region(
        self, path: list[Step], available: np.ndarray, q: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Proposable members of the deepest region on `path` that holds at least q of them."""
        order = rng.permutation(available)
        limit = min(order.size, max(self.partition.max_scan, q))
        depths: list[np.ndarray] = []
        wanted = max(self.gp.n_candidates, self.gp.screened_per_row * q, q)
        scanned, n_in_leaf, chunk = 0, 0, 4 * wanted
        while scanned < limit and n_in_leaf < wanted:
            rows = order[scanned : min(scanned + chunk, limit)]
            depths.append(depth_reached(path, normalise(self.pool[rows], self.cardinalities)))
            n_in_leaf += int((depths[-1] == len(path)).sum())
            scanned += rows.size
            chunk *= 2
        depth = np.concatenate(depths)
        at_least = np.array([(depth >= level).sum() for level in range(len(path) + 1)])
        level = int(np.flatnonzero(at_least >= q).max())
        self.diagnostics.update(
            path_depth=len(path),
            level_used=level,
            leaf_samples=path[-1].n_chosen if path else None,
            region_fraction=float(at_least[-1] / scanned),
            scanned=scanned,
        )
        return order[:scanned][depth >= level]
