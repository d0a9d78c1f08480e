"""End-to-end latency of whole networks, and how it compares with the latency table's units.

A tier is defined by the table's estimate, measured once; a shared machine's speed moves under
it. On this project's 2-core VM, the same five networks measured 1.13-1.56 ms, then 1.47-1.87 ms
minutes later, with nothing else running, and 30-40% slower right after a minute of load, as at
the end of a search. So the networks are timed in interleaved rounds together with a sample of
the table's own entries (the networks' layers), and the median ratio of those entries' timings
now to their stored timings is the machine's speed against the table (`speed`): a network's
`ms / speed` is its latency at the speed the table was measured at, the figure a tier's edge
can be compared with (over those three runs its spread was 5-10%, against 30-40% raw; when
whole networks drift and layers do not, it helps little: 14-17% against 18-25%,
experiments/results/speed_reference.md).
It corrects a machine that runs slower, not one that is busy: beside another process using both
cores, a layer of 0.03 ms mostly runs between preemptions and a 1.5 ms network does not, so
the same networks measured 1.47-1.68 ms with a speed of only 1.05. Time on an otherwise idle
machine, as a search's end is.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpunet.latency.backends import create_backend
from gpunet.latency.backends.base import time_interleaved
from gpunet.latency.build import LatencySetup
from gpunet.latency.keys import Probe, spec_probes
from gpunet.latency.table import LatencyTable
from gpunet.space.spec import NetworkSpec

REFERENCE_ENTRIES = 24  # table entries timed beside the networks (the networks' own layers)


@dataclass(frozen=True)
class EndToEnd:
    ms: list[float]  # each network's median, as measured now
    speed: float | None  # the machine now against when the table was measured (time ratio, > 1:
    #                      slower now); None when the table holds none of the reference entries
    context: dict[str, Any]  # where they were measured

    @property
    def at_table_speed(self) -> list[float]:
        """Each network's latency at the table's speed (as measured when `speed` is unknown)."""
        return [m / self.speed if self.speed else m for m in self.ms]


def stored_references(specs: Sequence[NetworkSpec], setup: LatencySetup, context: dict[str, Any]
                      ) -> list[tuple[Probe, float]]:
    """Up to REFERENCE_ENTRIES of the networks' layers (seeded draw) with their stored median (ms)
    in the setup's table for `context`; none where the table is not here or lacks them."""
    if not setup.table_path.is_file():
        return []
    probes = list({p.key: p for spec in specs for p in spec_probes(spec)}.values())
    random.Random(setup.seed).shuffle(probes)
    with LatencyTable(setup.table_path, context) as table:
        stored = [(p, table.get(p.key)) for p in probes]
    return [(p, entry.timing.median_ms) for p, entry in stored if entry is not None][:REFERENCE_ENTRIES]


def measure_end_to_end(specs: Sequence[NetworkSpec], setup: LatencySetup, rounds: int,
                       on_step: Callable[[], None] | None = None) -> EndToEnd:
    """Time `specs` end to end with the setup's backend in `rounds` interleaved rounds, beside
    up to REFERENCE_ENTRIES of their layers' table entries; `on_step` is called after each
    timed visit. Raises BackendUnavailable where the backend cannot run."""
    backend = create_backend(setup.latency, setup.device)
    try:
        context = backend.context()
        references = stored_references(specs, setup, context)
        runners = [backend.prepare_network(spec) for spec in specs] + [
            backend.prepare(p.module().eval(), (backend.batch_size, *p.shape)) for p, _ in references]
        timings = time_interleaved(runners, rounds, setup.seed, on_step)
    finally:
        backend.close()
    now = [t.median_ms for t in timings]
    speed = (float(np.median([m / ms for m, (_, ms) in zip(now[len(specs):], references)]))
             if references else None)
    return EndToEnd(now[:len(specs)], speed, context)
