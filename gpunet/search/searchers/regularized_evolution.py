"""`regularized_evolution`: Real et al. 2019 (AAAI) as published, with mutations kept in the pool.

The published algorithm (their Algorithm 1): a population of the last `population_size`
evaluated models (the oldest dies, "aging"), filled first with random models; each cycle draws
`sample_size` population members uniformly *with replacement*, takes the best of them as the
parent and evaluates a child that differs from it in one randomly mutated digit.

Kept faithful here, over a pool: the child is one of the parent's Hamming-1 neighbours in the
pool that can still be proposed, drawn with the probabilities the published mutation gives them
(digit uniform among digits with >1 choice, then a new value uniform among that digit's others),
renormalised over those allowed — exactly what redrawing the mutation until it lands on an
allowed pool row would give. A parent with no such neighbour gets a new tournament (the published
loop would re-evaluate a duplicate, which a pool search must not); after `population_size`
tournaments without one, the child is a random proposable row (`diagnostics["random_children"]`).

`evolution` differs in two ways: its tournament samples without replacement, and its child is the
proposable pool row nearest to a mutant, so it also works on sparse pools (latency tiers), where
rows rarely have Hamming-1 neighbours and this searcher degrades to random children.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpunet.search.searchers.base import FALLBACK, MODEL, Selection
from gpunet.search.searchers.evolution import EvolutionSearcher
from gpunet.search.searchers.neighbours import PoolNeighbours


class RegularizedEvolutionSearcher(EvolutionSearcher):
    """Aging evolution with tournament-with-replacement and one-digit mutations inside the pool."""

    name = "regularized_evolution"

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray, seed: int = 0,
                 budget: int | None = None, **knobs: Any) -> None:
        super().__init__(pool, cardinalities, seed, budget, **knobs)
        self.neighbours = PoolNeighbours(self.pool, self.cardinalities)
        mutable = self.cardinalities > 1
        # probability of the published mutation landing on a neighbour that changes digit d
        self._digit_weight = np.where(mutable, 1.0 / np.maximum(self.cardinalities - 1, 1), 0.0)

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        members, values = self._population()
        if members.size < self.evolution.population_size:
            return super()._select(q, available, rng)  # the random initial population
        free = ~self._blocked
        chosen, by = [], []
        for _ in range(q):
            child = self._child(members, values, free, rng)
            by.append(MODEL if child is not None else FALLBACK)
            if child is None:
                child = int(rng.choice(np.flatnonzero(free)))
            free[child] = False
            chosen.append(child)
        self.diagnostics.update(mode="evolve", random_children=by.count(FALLBACK))
        return np.array(chosen, dtype=np.int64), by

    def _child(
        self, members: np.ndarray, values: np.ndarray, free: np.ndarray, rng: np.random.Generator
    ) -> int | None:
        """A mutated child of a tournament winner that is a proposable pool row, or None."""
        for _ in range(self.evolution.population_size):
            sample = rng.integers(members.size, size=self.evolution.sample_size)
            parent = int(members[sample[np.argmax(values[sample])]])
            rows, digits = self.neighbours.of(parent)
            allowed = free[rows]
            if allowed.any():
                weight = self._digit_weight[digits[allowed]]
                return int(rng.choice(rows[allowed], p=weight / weight.sum()))
        return None
