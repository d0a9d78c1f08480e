"""Timing statistics of repeated runs: the median (robust to the odd slow run) and p90 (spread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    runs: int


def summarize(samples_ms: Sequence[float] | np.ndarray) -> Timing:
    """Samples of one measurement (milliseconds) -> median, p90 and count."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"need a non-empty 1-D array of timings, got shape {samples.shape}")
    return Timing(float(np.median(samples)), float(np.percentile(samples, 90)), int(samples.size))
