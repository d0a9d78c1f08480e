"""Callables the end-to-end search tests plug in as custom objectives (`objective._target_`)."""

from __future__ import annotations

import time

import numpy as np


def flaky_objective(encoding: list[int], cardinalities: np.ndarray) -> float:
    """A smooth value, but the job raises for every candidate whose digits sum to a multiple of 4."""
    total = int(sum(encoding))
    if total % 4 == 0:
        raise RuntimeError(f"injected failure for digit sum {total}")
    return -float(np.sum((np.asarray(encoding) / np.maximum(cardinalities - 1, 1) - 0.5) ** 2))


def timed_objective(encoding: list[int], cardinalities: np.ndarray) -> float:
    """A value that takes long to compute for one candidate in three (like a slow training):
    2 s when the digit sum is a multiple of 3, else 0.2 s."""
    time.sleep(2.0 if int(sum(encoding)) % 3 == 0 else 0.2)
    return float(sum(encoding))


def ctrl_c_swallowing_objective(encoding: list[int], cardinalities: np.ndarray) -> float:
    """Presses Ctrl-C on its own process (the basic launcher runs it inside the sweeper) and turns
    the interrupt into an ordinary error, as Hydra's config composition does when SIGINT lands in
    it; the first candidates take a moment, so the search has finished some trials before."""
    import os
    import signal

    if int(sum(encoding)) % 3:
        return float(sum(encoding))
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except BaseException as interrupt:  # noqa: BLE001 - the point: library code does this
        raise RuntimeError("an error that was a Ctrl-C") from interrupt
    return float(sum(encoding))
