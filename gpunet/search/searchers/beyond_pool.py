"""Candidates beyond the pool: new encodings near good ones that the tier admits (issue 12).

A latency tier is defined by the latency estimate (microseconds per network), so a search need
not stay inside one fixed Sobol sample of it. `children` mutates good observed encodings (1 to
`MAX_DIGITS_CHANGED` digits each); the GP step keeps the children that are not pool rows and
that the search's `admissible` test (the tier's estimate) accepts, scores them beside the pool
members, and a chosen child becomes a pool row (`Searcher.add_rows`), so pending, replay and
resume work by row as for any member. The fixed pool stays the random start and the replay key.
Children are put in canonical form first (one encoding per network, as the tier's pool is), so
a child that is a pool row's network under other ignored digits is that row, not a new one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Admissible = Callable[[np.ndarray], np.ndarray]  # (N, D) encodings -> (N,) bool: in the tier
# (N, D) encodings -> (N, D): one encoding per network (gpunet.space.canonical_encodings), so a
# child that only changes digits the network ignores is recognised as its parent's network
Canonical = Callable[[np.ndarray], np.ndarray]
MAX_DIGITS_CHANGED = 3  # a child differs from its parent in 1..3 digits (uniform): local moves
N_PARENTS = 10  # children are bred from the best this many observations (of the chosen region)


def children(parents: np.ndarray, cardinalities: np.ndarray, n: int,
             rng: np.random.Generator) -> np.ndarray:
    """n encodings, each a random parent with 1..MAX_DIGITS_CHANGED random digits (of those with
    a choice) set to another value; (n, D) int64. A digit drawn twice may return to its parent's
    value, so a child can equal its parent: callers drop children that are pool rows."""
    card = np.asarray(cardinalities, dtype=np.int64)
    mutable = np.flatnonzero(card > 1)
    kids = np.asarray(parents, dtype=np.int64)[rng.integers(len(parents), size=n)]
    if not mutable.size or not n:
        return kids
    changes = rng.integers(1, MAX_DIGITS_CHANGED + 1, size=n)
    rows = np.arange(n)
    for round_ in range(MAX_DIGITS_CHANGED):
        digit = rng.choice(mutable, size=n)
        other = rng.integers(card[digit] - 1)  # any value but the current one:
        value = other + (other >= kids[rows, digit])
        kids[rows, digit] = np.where(changes > round_, value, kids[rows, digit])
    return kids


class RowIndex:
    """Encoding -> pool row look-up for a pool that grows: the rows are hashed to one uint64
    each (a random linear hash, sorted once), so a million-row pool is indexed in a fraction of
    a second; a hash match is confirmed on the encoding itself."""

    def __init__(self, pool: np.ndarray) -> None:
        self._weights = np.random.default_rng(0).integers(1, 2**63, size=pool.shape[1],
                                                          dtype=np.uint64) | np.uint64(1)
        keys = self._hash(pool)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        self._pool = pool
        self._added: dict[bytes, int] = {}  # rows appended after the index was built

    def _hash(self, encodings: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (np.asarray(encodings, dtype=np.uint64) * self._weights).sum(axis=1)

    def find(self, encodings: np.ndarray) -> np.ndarray:
        """The row of each encoding (in the indexed pool or among rows added since), or -1."""
        encodings = np.asarray(encodings, dtype=np.int64).reshape(-1, self._pool.shape[1])
        keys = self._hash(encodings)
        at = np.minimum(np.searchsorted(self._sorted, keys), max(self._sorted.size - 1, 0))
        rows = np.full(len(encodings), -1, dtype=np.int64)
        if self._sorted.size:
            hit = self._sorted[at] == keys
            candidate = self._order[at[hit]]
            same = (self._pool[candidate] == encodings[hit]).all(axis=1)
            rows[np.flatnonzero(hit)[same]] = candidate[same]
        for i in np.flatnonzero(rows < 0):
            rows[i] = self._added.get(encodings[i].tobytes(), -1)
        return rows

    def note_added(self, encoding: np.ndarray, row: int) -> None:
        """Record that `encoding` became row `row` of the grown pool."""
        self._added[np.asarray(encoding, dtype=np.int64).tobytes()] = row
