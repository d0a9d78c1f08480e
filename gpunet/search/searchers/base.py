"""Ask/tell searcher over a fixed pool of encodings: the bookkeeping every searcher shares.

A searcher only ever proposes pool rows (by index) that are not observed, not pending and never
failed. Its randomness for a propose call is derived from (seed, observation history length,
pending count), never from a generator advanced by earlier proposals, so a searcher rebuilt from
the same pool, config, seed and replayed history proposes the same next batch (resume depends on
it).

Every proposed row says who chose it (`Searcher.proposers`, parallel to what `propose` returned),
one of `PROPOSERS`: the search journals it per trial, so the share the model chose can be checked.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from gpunet.search.searchers.beyond_pool import Admissible, Canonical, RowIndex
from gpunet.space.encoding import check_encodings

# Who proposed a row (a small fixed vocabulary, journaled per trial and counted in the summary):
RANDOM_START = "random_start"  # the searcher's random start (before its model exists, or a restart)
MODEL = "model"  # its own rule: the GP's acquisition (inside the tree's region), an evolved or
#                  TPE-sampled encoding that is itself a free pool row, a local-search neighbour
FALLBACK = "fallback"  # its rule could not apply and a stand-in chose: random after a failed fit,
#                        an ancestor region, the nearest free row to a sample that was taken, the
#                        random fill of a batch, or the pool's last rows
RANDOM = "random"  # the random searcher: uniform by design
PROPOSERS = (RANDOM_START, MODEL, FALLBACK, RANDOM)
Selection = tuple[np.ndarray, str | Sequence[str]]  # rows, and who chose them (one or per row)

# `n_init: auto`: the random start scaled to the budget, sqrt-shaped so its share shrinks as the
# budget grows: clamp(round(N_INIT_SCALE * sqrt(budget)), N_INIT_MIN, N_INIT_MAX), e.g. 4 random
# of 8 or 24 trials, 6 of 150, 10 of 400, 20 from 1,600 (experiments/results/nas_macro.md); with
# no budget given (an open-ended search) the cap, N_INIT_MAX.
AUTO = "auto"
N_INIT_SCALE, N_INIT_MIN, N_INIT_MAX = 0.5, 4, 20


def auto_n_init(budget: int) -> int:
    """The random start for a search of `budget` evaluations (the `n_init: auto` rule)."""
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"budget is {budget!r}; it must be an integer >= 1")
    return int(min(max(round(N_INIT_SCALE * math.sqrt(budget)), N_INIT_MIN), N_INIT_MAX))


def resolve_n_init(value: Any, budget: int | None) -> Any:
    """`n_init` as a searcher uses it: `auto` becomes `auto_n_init(budget)` (N_INIT_MAX without
    a budget); anything else (an explicit integer wins) is returned as given, for the settings'
    own check."""
    if value != AUTO:
        return value
    return N_INIT_MAX if budget is None else auto_n_init(budget)


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

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray, seed: int = 0,
                 budget: int | None = None, **knobs: Any) -> None:
        """`budget`: the evaluations the search will spend, if known (it scales `n_init: auto`)."""
        settings_from_knobs(knobs)  # this base takes no knobs: reject any
        self.pool, self.cardinalities = check_pool(pool, cardinalities)
        if int(seed) < 0:
            raise ValueError(f"seed is {seed}; it must be a non-negative integer")
        self.seed = int(seed)
        self.budget = budget
        n = self.pool.shape[0]
        self.n_base = n  # rows from n_base on were added beyond the given pool (`add_rows`)
        self.admissible: Admissible | None = None  # set by `allow_beyond_pool`
        self.canonical: Canonical | None = None  # likewise; None: every encoding is its own network
        self._row_index: RowIndex | None = None  # encoding -> row, built when first needed
        self._blocked = np.zeros(n, dtype=bool)  # observed, pending or failed: never proposed
        self._pending = np.zeros(n, dtype=bool)
        self._failed = np.zeros(n, dtype=bool)
        self._history: list[tuple[int, float]] = []  # every observation, failures included
        self.diagnostics: dict[str, Any] = {}  # what the last propose did (for experiments)
        self.proposers: list[str] = []  # who chose each row of the last propose (PROPOSERS)

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
        """Up to q distinct proposable pool indices (int64); fewer only when fewer remain.
        `proposers` then says who chose each of them."""
        if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 0:
            raise ValueError(f"q is {q!r}; it must be a non-negative integer")
        available = np.flatnonzero(~self._blocked)
        if available.size <= q:  # the pool's last rows: no choice was made
            chosen, by = available, FALLBACK
        else:
            self.diagnostics = {}
            chosen, by = self._select(int(q), available, self._rng())
            chosen = np.asarray(chosen, dtype=np.int64)
        self.proposers = [by] * chosen.size if isinstance(by, str) else list(by)
        if len(self.proposers) != chosen.size or not set(self.proposers) <= set(PROPOSERS):
            raise ValueError(f"{type(self).__name__} named proposers {self.proposers} for "
                             f"{chosen.size} rows; expected one of {PROPOSERS} per row")
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

    # ---- beyond the pool ----------------------------------------------------------------------
    def allow_beyond_pool(self, admissible: Admissible, canonical: Canonical | None = None) -> None:
        """Let the searcher also propose encodings outside the pool that `admissible` accepts
        (the tier's latency-estimate test), put in `canonical` form (one encoding per network;
        the pool must hold canonical encodings); bo, lamcts_bo and tpe use it, the others
        ignore it."""
        self.admissible, self.canonical = admissible, canonical

    def canonical_form(self, encodings: np.ndarray) -> np.ndarray:
        """`encodings` in canonical form: the same network's one encoding (as given without
        `canonical`)."""
        return encodings if self.canonical is None else self.canonical(encodings)

    def find_rows(self, encodings: np.ndarray) -> np.ndarray:
        """The pool row of each encoding (rows added beyond the pool included), or -1."""
        if self._row_index is None:
            self._row_index = RowIndex(self.pool)
        return self._row_index.find(encodings)

    def add_rows(self, encodings: np.ndarray) -> np.ndarray:
        """The row of each encoding, appending to the pool those it does not hold yet (they are
        then proposable like any row; a resumed search adds its journaled ones in trial order)."""
        enc = check_encodings(np.asarray(encodings).reshape(-1, self.cardinalities.size),
                              self.cardinalities, "encodings added to the pool").astype(np.int64)
        rows = self.find_rows(enc)
        added: list[int] = []
        for i in np.flatnonzero(rows < 0):
            earlier = self._row_index.find(enc[i])[0]  # the same encoding earlier in this call
            if earlier < 0:
                earlier = self.pool.shape[0] + len(added)
                self._row_index.note_added(enc[i], earlier)
                added.append(int(i))
            rows[i] = earlier
        if added:
            self.pool = np.concatenate([self.pool, enc[added].astype(self.pool.dtype)])
            grow = np.zeros(len(added), dtype=bool)
            self._blocked, self._pending, self._failed = (
                np.concatenate([flags, grow]) for flags in (self._blocked, self._pending, self._failed))
        return rows

    # ---- for subclasses ----------------------------------------------------------------------
    @abstractmethod
    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        """Choose q distinct members of `available` (sorted pool indices, more than q of them),
        and say who chose them: one of `PROPOSERS` for all, or one per row."""

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
