"""The search journal: one JSON object per line, appended, and the whole state of a search.

The first line is the search's definition and its fingerprint (gpunet.search.identity), so a
directory can only be resumed by the same search. Every other line is a trial's state at one
moment (`running` when handed to the launcher, then `completed`, `pruned` or `failed`); the last
line of a trial number wins. Appending whole lines
with flush + fsync means a killed sweeper loses at most the line it was writing, which `load`
skips, so re-running the search resumes from what the journal says.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpunet.search.identity import SearchMismatch, fingerprint

FINISHED = ("completed", "pruned", "failed")


@dataclass
class Trial:
    number: int
    job: int
    encoding: list[int]
    est_latency_ms: float
    pool_index: int | None = None  # the candidate's row in the tier pool (None: not from the pool)
    # who proposed it (searchers/base.py PROPOSERS: random_start, model, fallback, random); None
    # in journals written before it was recorded. A trial that runs again keeps its proposer.
    proposer: str | None = None
    status: str = "running"
    value: float | None = None
    curve: list[float] = field(default_factory=list)
    duration_s: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def observed_value(self) -> float:
        """What the searcher sees: the value, or NaN for a failure."""
        if self.status == "failed" or self.value is None or not math.isfinite(self.value):
            return math.nan
        return float(self.value)


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, trial: Trial) -> None:
        trial.time = time.time()
        self._append_line(asdict(trial))

    def start(self, definition: dict[str, Any]) -> None:
        """Begin a new journal with the search's definition (its first line)."""
        if self.path.exists() and self.path.stat().st_size:
            raise FileExistsError(f"{self.path} already holds a search")
        self._append_line({"search": definition, "fingerprint": fingerprint(definition),
                           "created": time.time()})

    def definition(self) -> dict[str, Any] | None:
        """The definition on the first line; None for a missing or empty journal."""
        if not self.path.exists():
            return None
        with open(self.path, encoding="utf-8") as f:
            first = f.readline()
        if not first.strip():
            return None
        try:
            header = json.loads(first)
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or "search" not in header:
            raise SearchMismatch(f"{self.path} does not start with a search definition (it was "
                                 "written by an older gpunet or is not a gpunet journal); run this "
                                 "search in a new directory (hydra.sweep.dir=...)")
        return header["search"]

    def _append_line(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _records(self) -> list[Trial]:
        """Every readable line, in order; a line cut short by a kill is skipped."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                if "search" not in record:  # the definition line is not a trial
                    records.append(Trial(**record))
            except (json.JSONDecodeError, TypeError):
                continue
        return records

    def load(self) -> dict[int, Trial]:
        """Latest state of every trial, in trial-number order."""
        latest = {trial.number: trial for trial in self._records()}
        return dict(sorted(latest.items()))

    def completed_curves(self) -> list[list[float]]:
        """The learning curves of the completed trials (what median stopping compares against)."""
        return [[float(v) for v in t.curve] for t in self.load().values()
                if t.status == "completed" and t.curve]

    def finished_in_order(self) -> list[Trial]:
        """Finished trials in the order they finished: the searcher's observation history."""
        records = self._records()
        latest = {trial.number: trial for trial in records}
        order = dict.fromkeys(t.number for t in records if t.finished)
        return [latest[n] for n in order if latest[n].finished]
