"""Callables the end-to-end search tests plug in as custom objectives (`objective._target_`)."""

from __future__ import annotations

import numpy as np


def flaky_objective(encoding: list[int], cardinalities: np.ndarray) -> float:
    """A smooth value, but the job raises for every candidate whose digits sum to a multiple of 4."""
    total = int(sum(encoding))
    if total % 4 == 0:
        raise RuntimeError(f"injected failure for digit sum {total}")
    return -float(np.sum((np.asarray(encoding) / np.maximum(cardinalities - 1, 1) - 0.5) ** 2))
