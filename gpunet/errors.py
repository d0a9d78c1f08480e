"""Errors gpunet raises on purpose, and how the apps print them.

An error whose message already says what is wrong and what to do (a bad setting, missing data, a
corrupt or unready latency table, an empty tier, another search's directory, too many failed
trials) is a `GpunetError`. The apps catch it at their edge (`one_line_errors`) and print
`error: <message>` to stderr and exit non-zero, without a traceback: the traceback of such an
error shows our code, not the user's mistake. Every other exception is a bug or a library's
error and keeps Hydra's traceback. `HYDRA_FULL_ERROR=1` shows the full traceback of both.

Each subclass also derives from the builtin it stands for (`ConfigError` is a `ValueError`), so
code and tests that catch the builtin keep working.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class GpunetError(Exception):
    """An error raised on purpose, whose message is all the user needs (printed as one line)."""

    exit_code = 1


class ConfigError(GpunetError, ValueError):
    """A setting (config key, override, encoding, spec, search space file) is wrong."""

    exit_code = 2  # a usage error, as argparse's


class NotFoundError(GpunetError, FileNotFoundError):
    """A file or folder the config names does not exist or holds nothing usable."""

    exit_code = 2


class RunFailed(GpunetError, RuntimeError):
    """A run ended the way it reports (a NaN loss, out of memory), not in a crash."""


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1 (Hydra's own switch): show every traceback."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Around an app's work: a GpunetError becomes `error: <message>` on stderr and a non-zero
    exit (SystemExit, which Hydra lets through); anything else propagates with its traceback."""
    try:
        yield
    except GpunetError as err:
        if full_error():
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
