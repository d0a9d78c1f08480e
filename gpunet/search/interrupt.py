"""Ctrl-C (or SIGTERM) during a search, kept as a flag as well as an exception.

While the sweeper runs, SIGINT and SIGTERM raise `SearchInterrupted` (see gpunet.search.summary). Library
code that the signal can land in may turn it into an ordinary error: Hydra's config composition
of a job (the basic launcher composes in the sweeper's process) re-raises anything as a
ConfigCompositionException, which the search would record as a failed trial and go on. The flag
survives that: the search loop calls `raise_if_interrupted()` before it records a round.
"""

from __future__ import annotations

import threading


class SearchInterrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM while a search runs. Not a KeyboardInterrupt: Lightning, training in the
    sweeper's process, turns that into its own message and exit(1); this it re-raises."""


_requested = threading.Event()


def interrupt() -> None:
    """Record a Ctrl-C or SIGTERM and raise it (the handler of both)."""
    _requested.set()
    raise SearchInterrupted


def clear() -> None:
    """Forget an earlier Ctrl-C (a new search starts)."""
    _requested.clear()


def raise_if_interrupted() -> None:
    """Raise `SearchInterrupted` if Ctrl-C was pressed, even if its exception was swallowed."""
    if _requested.is_set():
        raise SearchInterrupted
