"""What a search says when it ends: a summary of the search, or after Ctrl-C how to resume it.

The summary is printed to the console and written to `summary.txt` in the search's directory:
the trials by status, who proposed them (how many the searcher's model chose), the best network
(its value at full precision, estimated and measured latency, the final check that chose it,
params), where best.yaml, results.csv and the plots are, and what happened in the model hub
(added, replaced or kept, and why). A grid prints one per search, then where its comparison is.

Ctrl-C (or SIGTERM) in the sweeper prints one line (how many trials finished, how many were in
flight, and that re-running the same command resumes from the journal) and exits with 130 (143),
without a traceback. While the sweeper runs, SIGINT and SIGTERM raise `SearchInterrupted` instead of
KeyboardInterrupt: with the basic launcher a candidate trains inside the sweeper's process, and
Lightning answers a KeyboardInterrupt with its own shutdown message and exit(1).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from gpunet.files import write_text
from gpunet.search.interrupt import SearchInterrupted, clear, interrupt
from gpunet.search.journal import Journal, Trial
from gpunet.search.loop import LAUNCH_THREAD

SUMMARY_FILE = "summary.txt"
PLOTS = ("convergence.png", "latency_vs_accuracy.png")


def status_counts(trials: list[Trial]) -> dict[str, int]:
    """Trials by status: completed, pruned, failed, and running (in flight, or interrupted)."""
    counts = dict.fromkeys(("completed", "pruned", "failed", "running"), 0)
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    return counts


_PROPOSER_WORDS = {"model": "by the model", "random_start": "random start", "fallback": "fallback",
                   "random": "random", None: "not recorded"}


def proposer_line(trials: list[Trial]) -> str | None:
    """How many trials each proposer chose, the model first ("8 trials: 5 by the model, 3 random
    start", then how many came from beyond the tier's pool); None when no trial recorded one (a
    journal older than the record)."""
    if all(t.proposer is None for t in trials):
        return None
    counts: dict[str | None, int] = {}
    for trial in trials:
        counts[trial.proposer] = counts.get(trial.proposer, 0) + 1
    order = sorted(counts, key=lambda p: list(_PROPOSER_WORDS).index(p) if p in _PROPOSER_WORDS else 99)
    beyond = sum(t.pool_index is None for t in trials if t.proposer is not None)
    return f"{len(trials)} trials: " + ", ".join(
        f"{counts[p]} {_PROPOSER_WORDS.get(p, p)}" for p in order) + (
        f" ({beyond} beyond the tier's pool)" if beyond else "")


def hub_line(best: dict[str, Any] | None, *, objective: str, trains: bool, hub_add: bool,
             update: Any = None, stopped: str | None = None) -> str:
    """What happened in the model hub: `update` is add_search_result's answer, when it ran;
    else why nothing was added (`objective` is its name; only one that `trains` adds)."""
    if update is not None:
        return str(update)
    if not trains:
        return f"not added: objective={objective} (only objective=train adds to the hub)"
    if stopped is not None:
        return f"not added: the search stopped ({stopped})"
    if not hub_add:
        return "not added: hub.add=false"
    if best is None:
        return "not added: no trial finished with a value"
    return "not added"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f} ms"


SHOWN_CONTENDERS = 5  # a widened check times 20: the summary lists these, and the best if later


def final_check_lines(best: dict[str, Any], metric: str) -> list[str]:
    """The final check in two lines: the contenders' values and measured latencies (the first
    few, and the best wherever it is; best.yaml lists all), and why the best is the best (none
    for a best.yaml written before the check existed)."""
    check = best.get("final_check")
    if not check:
        return []
    edge, speed = float(check["tier_edge_ms"]), check.get("speed")
    measured = check["measured"]
    rows = [f"trial {m['trial']} ({float(m[metric]):.4g}, "
            + ("n/a" if m["at_table_speed_ms"] is None else
               f"{m['at_table_speed_ms']:.3f} ms{'' if m['at_table_speed_ms'] <= edge else ' > edge'}")
            + ")" for m in measured]
    best_at = next((i for i, m in enumerate(measured) if m["trial"] == best["trial"]), 0)
    shown = max(SHOWN_CONTENDERS, best_at + 1)
    rest = [m["at_table_speed_ms"] for m in measured[shown:]]
    more = (f", and {len(rest)} more ({sum(m is not None and m <= edge for m in rest)} within the "
            "tier; best.yaml lists them)" if rest else "")
    pace = ("" if speed is None else
            f"; this machine ran {speed:.2f}x the table's times, so these are the measurements / {speed:.2f}")
    widened = check.get("widened_from")
    why_so_many = "" if not widened else f"; none of the top {widened} was within the tier"
    return [f"  final check: the top {len(rows)} by {metric} timed end to end ({check['rounds']} rounds; "
            f"tier edge {edge:.3f} ms{pace}{why_so_many}): " + ", ".join(rows[:shown]) + more,
            f"  why trial {best['trial']}: {check['chosen']}"]


def format_summary(search_dir: Path, trials: list[Trial], n_trials: int, metric: str,
                   best: dict[str, Any] | None, hub: str, stopped: str | None = None) -> str:
    """The summary of one search (see the module's docstring): `best` is best.yaml's content,
    `metric` the name of its value there, `hub` what `hub_line` says."""
    search_dir = Path(search_dir).resolve()
    counts = status_counts(trials)
    finished = counts["completed"] + counts["pruned"] + counts["failed"]
    head = f"search stopped ({stopped})" if stopped else "search finished"
    lines = [f"{head}: {search_dir}",
             f"  trials: {finished} of {n_trials} finished: {counts['completed']} "
             f"completed, {counts['pruned']} pruned, {counts['failed']} failed"
             + (f" ({counts['running']} interrupted)" if counts["running"] else "")]
    proposers = proposer_line(trials)
    if proposers is not None:
        lines.append(f"  proposed: {proposers}")
    if best is None:
        lines.append("  best: none (no trial finished with a value)")
    else:
        measured, at_speed = best.get("measured_latency_ms"), best.get("measured_at_table_speed_ms")
        where = best.get("latency_context") or {}
        lines += [f"  best: trial {best['trial']}, {metric} = {float(best[metric])!r}",
                  f"  latency: estimated {_ms(best.get('est_latency_ms'))}, measured "
                  + (_ms(measured) if measured is not None else "n/a (see measured_latency_note "
                     "in best.yaml)")
                  + (f" ({where.get('backend')} on {where.get('device')})" if where else "")
                  + ("" if at_speed is None or at_speed == measured else
                     f", {_ms(at_speed)} at the table's speed"),
                  *final_check_lines(best, metric),
                  f"  params: {int(best['params']):,} (MACs {int(best['macs']):,})",
                  f"  best.yaml: {search_dir / 'best.yaml'} (network: {best.get('onnx', 'best.onnx')})"]
    lines += [f"  results.csv: {search_dir / 'results.csv'}",
              "  plots: " + ", ".join(str(search_dir / name) for name in PLOTS),
              f"  hub: {hub}"]
    return "\n".join(lines)


def report(search_dir: Path, text: str) -> None:
    """Print a summary and keep it in the search's directory."""
    print(text, flush=True)
    write_text(Path(search_dir) / SUMMARY_FILE, text + "\n")


def format_comparison(grid_dir: Path, searches: int) -> str:
    grid_dir = Path(grid_dir).resolve()
    return (f"grid of {searches} searches compared: {grid_dir / 'comparison.csv'}, "
            f"{grid_dir / 'comparison.png'}")


def interrupted_line(search_dir: Path | None) -> str:
    """The one line Ctrl-C leaves: what finished, what was in flight, how to resume."""
    if search_dir is None:
        return "interrupted before a search started; re-run the same command to start it"
    journal = Journal(Path(search_dir).resolve() / "journal.jsonl")
    if not journal.path.is_file():
        return (f"interrupted before the first trial of {journal.path.parent}; re-run the same "
                "command to start it")
    counts = status_counts(list(journal.load().values()))
    finished = counts["completed"] + counts["pruned"] + counts["failed"]
    return (f"interrupted: {finished} trials finished, {counts['running']} in flight; re-run the "
            f"same command to resume (journal: {journal.path})")


def _stop_workers(timeout_s: float = 5.0) -> None:
    """Terminate this process's multiprocessing children (joblib's loky workers): their jobs
    were interrupted too (they run again on resume), and they must not keep writing. Then give
    the threads that waited on them (the asynchronous schedule's launches) a moment to finish
    their launcher's clean-up, so that it does not race the interpreter's exit."""
    deadline = time.monotonic() + timeout_s
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():  # os.kill: loky's workers have no Process.kill
            with suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            child.join(1.0)
    for thread in threading.enumerate():
        if thread.name.startswith(LAUNCH_THREAD):
            thread.join(max(0.0, deadline - time.monotonic()))


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; `kill PID`, `timeout`, a container stop, preemption


@contextmanager
def resume_line_on_interrupt(current_dir: Callable[[], Path | None]) -> Iterator[None]:
    """Around the sweeper's work: Ctrl-C or SIGTERM prints `interrupted_line(current_dir())` to
    stderr, stops the local worker processes and exits with 128 + the signal's number (130, 143),
    without a traceback. (Python's default for SIGTERM ends the sweeper at once: its loky workers
    trained on, orphaned, and wrote into a search that a resume would run again.)"""
    received = [signal.SIGINT]  # a KeyboardInterrupt raised without our handler is a Ctrl-C

    def on_signal(signum: int, frame: Any) -> None:
        received[0] = signum
        interrupt()

    clear()
    try:
        previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    except ValueError:  # not the main thread: KeyboardInterrupt is still caught below
        previous = {}
    interrupted = False
    try:
        yield
    except (KeyboardInterrupt, SearchInterrupted):
        interrupted = True
        for signum in STOP_SIGNALS:  # a second signal must not cut this short
            signal.signal(signum, signal.SIG_IGN)
        print(interrupted_line(current_dir()), file=sys.stderr, flush=True)
        _stop_workers()
        raise SystemExit(128 + received[0]) from None
    finally:
        if not interrupted:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
