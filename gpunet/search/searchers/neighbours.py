"""Hamming-1 neighbours of pool rows, found by look-up: the moves of local search and of
regularized evolution, restricted to pool members.

A neighbour of a row is a pool row whose encoding differs from it in exactly one digit. On a pool
that holds the whole space (a tabular benchmark) every row has sum(cardinality - 1) of them; on a
sparse sample of a large space (a latency-tier pool) most rows have none.
"""

from __future__ import annotations

import numpy as np


class PoolNeighbours:
    """Encoding -> pool rows look-up (built once), answering `of(row)` in O(digits x values)."""

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray) -> None:
        self.pool = pool
        self.cardinalities = np.asarray(cardinalities, dtype=np.int64)
        self._rows: dict[bytes, list[int]] = {}
        keys = np.ascontiguousarray(pool, dtype=np.int64)
        for i, row in enumerate(keys):
            self._rows.setdefault(row.tobytes(), []).append(i)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def of(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Pool rows at Hamming distance 1 from pool row `row`, and the digit each one changes."""
        if row not in self._cache:
            base = self.pool[row].astype(np.int64)
            found, digits = [], []
            for d, card in enumerate(self.cardinalities.tolist()):
                for value in range(card):
                    if value == base[d]:
                        continue
                    variant = base.copy()
                    variant[d] = value
                    hits = self._rows.get(variant.tobytes(), [])
                    found += hits
                    digits += [d] * len(hits)
            self._cache[row] = (np.array(found, dtype=np.int64), np.array(digits, dtype=np.int64))
        return self._cache[row]
