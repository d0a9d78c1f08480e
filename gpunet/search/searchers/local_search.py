"""`local_search`: local search as in White, Nolen & Savani (UAI 2021), over a pool.

Their algorithm (code `naszilla/naszilla`, `local_search`): evaluate `n_init` random
architectures and take the best as the centre; evaluate the centre's not-yet-evaluated
neighbours in random order; with `full_neighbourhood` (their default) evaluate all of them and
move to the best neighbour if it beats the centre, otherwise move to the first neighbour that
beats it; when no neighbour beats the centre (a local optimum), restart with `n_init` new random
architectures. Here a neighbour is a pool row at Hamming distance 1 (`PoolNeighbours`): on a
pool that holds the whole space these are all one-digit changes; on a sparse pool few rows
have any, and the search becomes a sequence of random restarts.

The state (centre, the run's random start, the best neighbour of the sweep) is replayed from the
observation history at each propose, so a searcher rebuilt from a journal resumes exactly.
Batches (q > 1) take q neighbours of the centre at once; slots the centre's remaining
neighbours cannot fill (proposer `fallback`), and every slot while a random start is being
collected (`random_start`), are random pool rows (an observation that is no neighbour of the
centre is ignored by the walk). Neighbours of the centre are the searcher's `model` choice.
"""

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
from gpunet.search.searchers.neighbours import PoolNeighbours


@dataclass(frozen=True)
class LocalSearchSettings:
    """Knobs of local search (see conf/searcher/local_search.yaml)."""

    n_init: int = 10
    full_neighbourhood: bool = True

    def __post_init__(self) -> None:
        require_ints(self, {"n_init": 1})
        if not isinstance(self.full_neighbourhood, bool):
            raise ValueError(f"full_neighbourhood is {self.full_neighbourhood!r}; it must be true or false")


class LocalSearchSearcher(Searcher):
    """Random start, then hill-climbing over Hamming-1 pool neighbours with random restarts."""

    name = "local_search"

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray, seed: int = 0,
                 budget: int | None = None, **knobs: Any) -> None:
        super().__init__(pool, cardinalities, seed, budget)
        (self.local,) = settings_from_knobs(knobs, LocalSearchSettings)
        self.neighbours = PoolNeighbours(self.pool, self.cardinalities)

    def centre(self) -> int | None:
        """The pool row whose neighbourhood is being evaluated now; None while a random start
        (the first, or a restart's) is being collected. Replays the history."""
        seen: set[int] = set()
        start: list[tuple[int, float]] = []
        centre: int | None = None
        centre_value = best_value = -np.inf
        best: int | None = None  # the sweep's best neighbour that beats the centre
        for i, v in self._history:
            seen.add(i)
            if centre is None:
                if np.isfinite(v):
                    start.append((i, v))
                if len(start) == self.local.n_init:
                    centre, centre_value = max(start, key=lambda iv: iv[1])
                    start, best, best_value = [], None, -np.inf
            elif np.isfinite(v) and v > max(centre_value, best_value) and i in self._neighbour_set(centre):
                best, best_value = i, v
                if not self.local.full_neighbourhood:
                    centre, centre_value, best, best_value = i, v, None, -np.inf
            while centre is not None and self._neighbour_set(centre) <= seen:  # sweep done
                if best is None:
                    centre = None  # a local optimum: restart
                else:
                    centre, centre_value, best, best_value = best, best_value, None, -np.inf
        return centre

    def _neighbour_set(self, row: int) -> set[int]:
        return set(self.neighbours.of(row)[0].tolist())

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        centre = self.centre()
        chosen = np.empty(0, dtype=np.int64)
        if centre is not None:
            rows = self.neighbours.of(centre)[0]
            chosen = rng.permutation(rows[~self._blocked[rows]])[:q]
        rest = np.setdiff1d(available, chosen)
        fill = rng.choice(rest, size=q - chosen.size, replace=False)
        self.diagnostics.update(
            mode="random-start" if centre is None else "neighbours",
            centre=centre,
            random_fill=int(fill.size),
        )
        filler = RANDOM_START if centre is None else FALLBACK  # a (re)start, or the batch's rest
        return np.concatenate([chosen, fill]).astype(np.int64), [MODEL] * chosen.size + [filler] * fill.size
