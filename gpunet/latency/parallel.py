"""Measure table entries in parallel processes, one per GPU (or N on the CPU).

Each worker owns a backend on its own device and writes every entry straight into the shared
SQLite table (concurrent writers are safe), so a killed build keeps all finished entries. The
parent only hands out work and drives the progress bar.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gpunet.latency.backends import Backend, create_backend
from gpunet.latency.keys import Probe
from gpunet.latency.table import LatencyTable


def measure_into(table: LatencyTable, backend: Backend, probes: Sequence[Probe],
                 on_done: Callable[[], None]) -> None:
    """Measure `probes` one by one with `backend`, adding each to `table` as soon as it is timed."""
    for probe in probes:
        try:
            timing = backend.measure_probe(probe)
        except Exception as err:
            raise RuntimeError(f"measuring table entry {probe.key} failed: {err}") from err
        table.put(probe.key, probe.fields(), timing)
        on_done()


def _worker(index: int, latency: Mapping[str, Any], device: Mapping[str, Any], path: str,
            context: Mapping[str, Any], tasks: mp.Queue, results: mp.Queue) -> None:
    try:
        backend = create_backend(latency, device, device_index=index if device["type"] == "cuda" else 0)
        if backend.context() != context:
            raise RuntimeError(f"worker {index} measures in context {backend.context()}, the table "
                               f"is for {context}; a table belongs to one kind of device")
        with LatencyTable(path, context) as table:
            probes = iter(lambda: tasks.get(), None)
            measure_into(table, backend, probes, lambda: results.put(("done", index, None)))
        backend.close()
        results.put(("exit", index, None))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))


def measure_parallel(probes: Sequence[Probe], latency: Mapping[str, Any], device: Mapping[str, Any],
                     path: str, context: Mapping[str, Any], workers: int,
                     on_done: Callable[[], None]) -> None:
    """Measure `probes` in `workers` spawned processes (worker i uses GPU i on CUDA devices)."""
    ctx = mp.get_context("spawn")  # CUDA and fork do not mix
    tasks, results = ctx.Queue(), ctx.Queue()
    for probe in probes:
        tasks.put(probe)
    for _ in range(workers):
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(i, dict(latency), dict(device), path, dict(context),
                                                tasks, results), daemon=True)
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        running = workers
        while running:
            try:
                kind, index, detail = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a latency worker died (exit code {dead[0].exitcode})") from None
                continue
            if kind == "done":
                on_done()
            elif kind == "exit":
                running -= 1
            else:
                raise RuntimeError(f"latency worker {index} failed:\n{detail}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
