"""`evolution`: regularised (aging) evolution, Real et al. 2019, the standard NAS baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpunet.search.searchers.base import (
    FALLBACK,
    MODEL,
    RANDOM_START,
    Searcher,
    Selection,
    require_ints,
    settings_from_knobs,
)


@dataclass(frozen=True)
class EvolutionSettings:
    """Knobs of regularised evolution (see conf/searcher/evolution.yaml)."""

    population_size: int = 50
    sample_size: int = 10

    def __post_init__(self) -> None:
        require_ints(self, {"population_size": 1, "sample_size": 1})
        if self.sample_size > self.population_size:
            raise ValueError(
                f"sample_size {self.sample_size} exceeds population_size "
                f"{self.population_size}; it must be <= population_size"
            )


class EvolutionSearcher(Searcher):
    """Random pool members until the population is full, then tournament + one-digit mutation.

    The population is the last `population_size` finite observations (the oldest dies). A child
    copies the best of `sample_size` random population members and changes one random digit;
    since the child must be a pool member, the proposal is the proposable pool row nearest to it
    (fewest differing digits, ties broken at random) — the child itself when it is in the pool
    (its proposer is then `model`; a stand-in at a distance is `fallback`).
    """

    name = "evolution"

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray, seed: int = 0,
                 budget: int | None = None, **knobs: Any) -> None:
        super().__init__(pool, cardinalities, seed, budget)
        (self.evolution,) = settings_from_knobs(knobs, EvolutionSettings)

    def _population(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices and values of the last `population_size` finite observations."""
        finite = [(i, v) for i, v in self._history if np.isfinite(v)]
        recent = finite[-self.evolution.population_size :]
        return np.array([i for i, _ in recent], dtype=np.int64), np.array([v for _, v in recent])

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        members, values = self._population()
        if members.size < self.evolution.population_size:
            self.diagnostics["mode"] = "random-init"
            return rng.choice(available, size=q, replace=False), RANDOM_START
        mutable = np.flatnonzero(self.cardinalities > 1)
        free = ~self._blocked
        chosen, distances = [], []
        for _ in range(q):
            tournament = rng.choice(members.size, size=self.evolution.sample_size, replace=False)
            child = self.pool[members[tournament[np.argmax(values[tournament])]]].astype(np.int64)
            if mutable.size:
                digit = rng.choice(mutable)
                new = rng.integers(self.cardinalities[digit] - 1)
                child[digit] = new + (new >= child[digit])  # any value but the current one
            differing = (self.pool != child.astype(self.pool.dtype)).sum(axis=1)
            distance = np.where(free, differing, child.size + 1)
            nearest = np.flatnonzero(distance == distance.min())
            pick = int(rng.choice(nearest))
            free[pick] = False
            chosen.append(pick)
            distances.append(int(distance[pick]))
        self.diagnostics.update(mode="evolve", mean_distance=float(np.mean(distances)))
        return np.array(chosen, dtype=np.int64), [MODEL if d == 0 else FALLBACK for d in distances]
