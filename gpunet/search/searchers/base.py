"""Ask/tell searcher over a fixed pool of encodings: the bookkeeping every searcher shares.

A searcher only ever proposes pool rows (by index) that are not observed, not pending and never
failed. Its randomness for a propose call is derived from (seed, observation history length,
pending count), never from a generator advanced by earlier proposals, so a searcher rebuilt from
the same pool, config, seed and replayed history proposes the same next batch (resume depends on
it).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from gpunet.space.encoding import check_encodings


def check_pool(pool: np.ndarray, cardinalities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (N, D) integer pool against (D,) cardinalities; return both as arrays."""
    card = np.asarray(cardinalities)
    if card.ndim != 1 or card.size == 0 or not np.issubdtype(card.dtype, np.integer):
        raise ValueError(f"cardinalities must be a non-empty 1-D integer array, got {card!r}")
    if (card < 1).any():
        raise ValueError(f"cardinalities {card.tolist()} must all be >= 1")
    pool = check_encodings(pool, card, "pool")
    return pool, card.astype(np.int64)


def require_ints(settings: object, minimums: Mapping[str, int]) -> None:
    """Raise naming the first field of `settings` that is not an integer >= its minimum."""
    for field, minimum in minimums.items():
        value = getattr(settings, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{field} is {value!r}; it must be an integer >= {minimum}")


def settings_from_knobs(knobs: Mapping[str, Any], *kinds: type) -> list[Any]:
    """Build each settings dataclass from the knobs naming its fields; reject unknown knobs."""
    remaining = dict(knobs)
    allowed: list[str] = []
    built = []
    for kind in kinds:
        names = [f.name for f in dataclasses.fields(kind)]
        allowed += names
        built.append(kind(**{k: remaining.pop(k) for k in names if k in remaining}))
    if remaining:
        raise ValueError(f"unknown searcher knob(s) {sorted(remaining)}; allowed are {allowed}")
    return built


SEARCHERS: dict[str, type[Searcher]] = {}  # by `name`: every subclass that sets one


class Searcher(ABC):
    """Maximise a black-box value over the rows of `pool` by ask (`propose`) / tell (`observe`).

    A subclass that sets `name` registers itself: a new searcher is one module in this package
    (imported by the package) and one conf/searcher/<name>.yaml."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in SEARCHERS:
                raise TypeError(f"searcher name {cls.name!r} is taken by {SEARCHERS[cls.name]}")
            SEARCHERS[cls.name] = cls

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray, seed: int = 0, **knobs: Any) -> None:
        settings_from_knobs(knobs)  # this base takes no knobs: reject any
        self.pool, self.cardinalities = check_pool(pool, cardinalities)
        if int(seed) < 0:
            raise ValueError(f"seed is {seed}; it must be a non-negative integer")
        self.seed = int(seed)
        n = self.pool.shape[0]
        self._blocked = np.zeros(n, dtype=bool)  # observed, pending or failed: never proposed
        self._pending = np.zeros(n, dtype=bool)
        self._failed = np.zeros(n, dtype=bool)
        self._history: list[tuple[int, float]] = []  # every observation, failures included
        self.diagnostics: dict[str, Any] = {}  # what the last propose did (for experiments)

    # ---- state -------------------------------------------------------------------------------
    @property
    def n_observed(self) -> int:
        """Number of values told through `observe` (failures and repeats included)."""
        return len(self._history)

    @property
    def n_failed(self) -> int:
        return int(self._failed.sum())

    @property
    def n_pending(self) -> int:
        return int(self._pending.sum())

    @property
    def n_remaining(self) -> int:
        """Pool rows that can still be proposed."""
        return int((~self._blocked).sum())

    def observed(self, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distinct indices with a finite value and their mean value (repeats are averaged),
        in order of first observation; `upto` limits it to the first `upto` observations."""
        sums: dict[int, float] = {}
        counts: dict[int, int] = {}
        for i, v in self._history[:upto]:
            if np.isfinite(v):
                sums[i] = sums.get(i, 0.0) + v
                counts[i] = counts.get(i, 0) + 1
        idx = np.fromiter(sums, dtype=np.int64, count=len(sums))
        return idx, np.array([sums[i] / counts[i] for i in sums], dtype=float)

    @property
    def best_index(self) -> int | None:
        idx, mean = self.observed()
        return int(idx[np.argmax(mean)]) if idx.size else None

    @property
    def best_value(self) -> float:
        """Best mean value observed so far; -inf before any finite observation."""
        _, mean = self.observed()
        return float(mean.max()) if mean.size else -np.inf

    # ---- ask / tell --------------------------------------------------------------------------
    def propose(self, q: int) -> np.ndarray:
        """Up to q distinct proposable pool indices (int64); fewer only when fewer remain."""
        if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 0:
            raise ValueError(f"q is {q!r}; it must be a non-negative integer")
        available = np.flatnonzero(~self._blocked)
        if available.size <= q:
            chosen = available
        else:
            self.diagnostics = {}
            chosen = np.asarray(self._select(int(q), available, self._rng()), dtype=np.int64)
        self._pending[chosen] = True
        self._blocked[chosen] = True
        return chosen.astype(np.int64, copy=False)

    def observe(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Record values (to maximise) for pool indices; NaN or infinite values are failures."""
        idx = self._check_indices(indices)
        vals = np.asarray(values, dtype=float).reshape(-1)
        if vals.shape != idx.shape:
            raise ValueError(f"got {idx.size} indices but {vals.size} values; pass one value per index")
        for i, v in zip(idx.tolist(), vals.tolist(), strict=True):
            self._history.append((i, v))
            if not np.isfinite(v):
                self._failed[i] = True
        self._pending[idx] = False
        self._blocked[idx] = True

    def mark_pending(self, indices: np.ndarray) -> None:
        """Record that these indices are being evaluated outside `propose` (jobs of an earlier
        run that run again after a resume): never proposed, and pending for the acquisition."""
        idx = self._check_indices(indices)
        self._pending[idx] = True
        self._blocked[idx] = True

    def mark_failed(self, indices: np.ndarray) -> None:
        """Record that these indices could not be evaluated; they are never proposed again."""
        idx = self._check_indices(indices)
        self.observe(idx, np.full(idx.size, np.nan))

    # ---- for subclasses ----------------------------------------------------------------------
    @abstractmethod
    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Choose q distinct members of `available` (sorted pool indices, more than q of them)."""

    def _rng(self) -> np.random.Generator:
        """This propose call's generator: a pure function of seed and history, not of calls."""
        return np.random.default_rng([self.seed, self.n_observed, self.n_pending])

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices).reshape(-1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices have dtype {idx.dtype}; expected integer pool indices")
        idx = idx.astype(np.int64)
        n = self.pool.shape[0]
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise ValueError(f"index {bad[0]} is outside the pool; allowed is 0..{n - 1}")
        return idx
