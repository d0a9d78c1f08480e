"""Atomic file writes, the one home for them: a reader (or a kill) never sees half a file.

Every writer goes through `atomic_path`: the content is written to a unique temp name beside the
target (unique per process and call, so concurrent writers never rename each other's file),
created like any file so it gets the umask's mode (mkstemp would leave 0600), then renamed over
the target. On failure the temp file is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write to; on leaving the block it replaces `path`. The temp name keeps
    `path`'s suffix, so writers that pick a format by suffix (matplotlib, ONNX, numpy) still do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)
