"""`bo`: Bayesian optimisation over a pool — GP + qLogNEI scored on a random subset of it."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpunet.search.searchers.base import Searcher, settings_from_knobs
from gpunet.search.searchers.gp import GPSettings, cap_training_set, normalise, select_batch


class BOSearcher(Searcher):
    """Random pool members until `n_init` values are known, then GP-qLogNEI batches.

    Knobs are the fields of `GPSettings`. Falls back to uniform choice among the candidates
    when the values carry no information (all equal) or the GP cannot be fitted;
    `diagnostics["mode"]` says which happened.
    """

    name = "bo"

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray, seed: int = 0, **knobs: Any) -> None:
        super().__init__(pool, cardinalities, seed)
        (self.gp,) = settings_from_knobs(knobs, GPSettings)

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._choose_by_gp(q, available, rng)

    def _choose_by_gp(self, q: int, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """q of `candidates` (at least q proposable pool indices) chosen by the GP step."""
        if candidates.size == q:
            self.diagnostics["mode"] = "whole-region"
            return candidates
        idx, values = self.observed()
        if idx.size < self.gp.n_init or np.ptp(values) == 0:
            self.diagnostics["mode"] = "random-init" if idx.size < self.gp.n_init else "random-flat"
            return rng.choice(candidates, size=q, replace=False)
        train = cap_training_set(values, self.gp.max_train, rng)
        n_scored = max(self.gp.n_candidates, q)
        if candidates.size > n_scored:
            candidates = np.sort(rng.choice(candidates, size=n_scored, replace=False))
        _, first = np.unique(self.pool[candidates], axis=0, return_index=True)
        distinct = candidates[np.sort(first)]
        if distinct.size <= q:  # identical encodings: the GP cannot tell them apart
            self.diagnostics["mode"] = "random-duplicates"
            return rng.choice(candidates, size=q, replace=False)
        positions = select_batch(
            normalise(self.pool[idx[train]], self.cardinalities),
            values[train],
            normalise(self.pool[distinct], self.cardinalities),
            normalise(self.pool[self._pending], self.cardinalities),
            q,
            self.gp,
            seed=int(rng.integers(2**31)),
        )
        if positions is None:
            self.diagnostics["mode"] = "random-fit-failed"
            return rng.choice(distinct, size=q, replace=False)
        self.diagnostics.update(mode="gp", n_train=int(train.size), n_candidates=distinct.size)
        return distinct[positions]
