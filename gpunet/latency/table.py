"""The latency table: one SQLite file (WAL mode) of per-layer timings.

An entry's key is (context, layer key): the context says where the timings are valid (device,
hardware, backend, precision, batch, backend settings, library versions) and the layer key is the
layer's fields and input shape (gpunet.latency.keys). One file can hold several contexts; a
`LatencyTable` object reads and writes one of them. Every write is its own short transaction, so
several processes can fill the same file at once and a killed build loses at most what it was
measuring.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.errors import GpunetError
from gpunet.latency.timing import Timing

APPLICATION_ID = 0x67704C54  # "gpLT" in the SQLite header: marks the file as a gpunet table
SCHEMA_VERSION = 2  # 2: calibrations.d (a weights term)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS contexts (
    id INTEGER PRIMARY KEY,
    context TEXT NOT NULL UNIQUE          -- canonical JSON
);
CREATE TABLE IF NOT EXISTS entries (
    context_id INTEGER NOT NULL REFERENCES contexts(id),
    key TEXT NOT NULL,                    -- gpunet.latency.keys: layer fields + input shape
    fields TEXT NOT NULL,                 -- the same key as JSON, for people and other tools
    median_ms REAL NOT NULL,
    p90_ms REAL NOT NULL,
    runs INTEGER NOT NULL,
    measured_at TEXT NOT NULL,            -- ISO 8601, UTC
    PRIMARY KEY (context_id, key)
);
CREATE TABLE IF NOT EXISTS calibrations (
    context_id INTEGER PRIMARY KEY REFERENCES contexts(id),
    a REAL NOT NULL, b REAL NOT NULL, c REAL NOT NULL, d REAL NOT NULL DEFAULT 0,
    mape REAL NOT NULL, networks INTEGER NOT NULL, fitted_at TEXT NOT NULL
);
"""


class LatencyTableError(GpunetError, RuntimeError):
    """The file is not a usable gpunet latency table."""


@dataclass(frozen=True)
class Entry:
    key: str
    fields: dict[str, Any]
    timing: Timing
    measured_at: str


@dataclass(frozen=True)
class Calibration:
    """end_to_end_ms ~= a * sum_of_entries_ms + b * number_of_entries + c + d * million_parameters
    (least squares). The weights term is there because a layer timed alone keeps its weights in
    cache and a whole network of many MB does not (experiments/results/tier_fidelity.md)."""

    a: float
    b: float
    c: float
    d: float  # ms per million parameters (0 in calibrations stored before schema 2)
    mape: float  # in-sample mean absolute percentage error of the calibrated estimate, %
    networks: int  # how many networks it was fitted on

    def apply(self, sum_ms: np.ndarray, entries: np.ndarray, mparams: np.ndarray) -> np.ndarray:
        """The calibrated estimate in ms of networks with these sums, entry counts and weights."""
        return self.a * sum_ms + self.b * entries + self.c + self.d * mparams


def canonical_context(context: Mapping[str, Any]) -> str:
    """A context as the JSON string that identifies it (sorted keys, no whitespace)."""
    if not context:
        raise ValueError("a latency table context must not be empty")
    try:
        return json.dumps(context, sort_keys=True, separators=(",", ":"))
    except TypeError as err:
        raise ValueError(f"a latency table context must be JSON-serialisable: {err}") from err


@dataclass(frozen=True)
class StoredContext:
    """One context of a table file, as stored: where its entries were measured."""

    context: dict[str, Any]
    entries: int
    last_measured: str | None  # ISO 8601 time of its newest entry


def stored_contexts(path: str | Path) -> list[StoredContext]:
    """Every context of the table file at `path` with its entry count; [] when there is no file.
    Reads only: needs neither a backend nor the device."""
    path = Path(path)
    if not path.is_file():
        return []
    conn = sqlite3.connect(path, timeout=120.0)
    try:
        app = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if app != APPLICATION_ID:
            if app == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                return []  # an empty file: a table that another process is creating
            raise LatencyTableError(f"{path} is not a gpunet latency table (application_id {app:#x}); "
                                    "point latency.table= at the table file")
        rows = conn.execute(
            "SELECT c.context, COUNT(e.key), MAX(e.measured_at) FROM contexts c "
            "LEFT JOIN entries e ON e.context_id = c.id GROUP BY c.id ORDER BY c.id").fetchall()
    except sqlite3.DatabaseError as err:
        raise LatencyTableError(f"{path} is not a readable gpunet latency table ({err})") from err
    finally:
        conn.close()
    return [StoredContext(json.loads(text), int(n), last) for text, n, last in rows]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LatencyTable:
    """The entries of one context in one SQLite file; creates the file when it does not exist."""

    def __init__(self, path: str | Path, context: Mapping[str, Any], timeout_s: float = 120.0) -> None:
        self.path = Path(path)
        self.context = json.loads(canonical_context(context))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        try:
            self._run(self._open)
        except BaseException:
            self._conn.close()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> None:
        with _Transaction(self, "DEFERRED"):  # one snapshot: another process may be creating the
            self._check_format()  # file between two reads; before anything writes to a file
        with self._write():  # that may not be ours
            if self._pragma("application_id") == 0:
                self._check_format()  # another process may have created it meanwhile
                for statement in _SCHEMA.split(";"):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif self._pragma("user_version") < 2:  # schema 1: calibrations without a weights term
                self._conn.execute("ALTER TABLE calibrations ADD COLUMN d REAL NOT NULL DEFAULT 0")
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            text = canonical_context(self.context)
            self._conn.execute("INSERT OR IGNORE INTO contexts (context) VALUES (?)", (text,))
            (self.context_id,) = self._conn.execute(
                "SELECT id FROM contexts WHERE context = ?", (text,)).fetchone()
        self._run(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
        self._run(lambda: self._conn.execute("PRAGMA synchronous = NORMAL"))

    def _check_format(self) -> None:
        app = self._pragma("application_id")
        if app == 0:
            names = [r[0] for r in self._run(lambda: self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall())]
            if names:
                raise LatencyTableError(
                    f"{self.path} is a SQLite database but not a gpunet latency table (it has tables "
                    f"{names}); point latency.table= at a new path or delete the file")
        elif app != APPLICATION_ID:
            raise LatencyTableError(
                f"{self.path} is a SQLite database of another application (application_id "
                f"{app:#x}); point latency.table= at a new path")
        elif self._pragma("user_version") > SCHEMA_VERSION:
            raise LatencyTableError(
                f"{self.path} was written by a newer gpunet (schema {self._pragma('user_version')} > "
                f"{SCHEMA_VERSION}); upgrade gpunet or use another table path")

    def _pragma(self, name: str) -> int:
        return int(self._run(lambda: self._conn.execute(f"PRAGMA {name}").fetchone()[0]))

    def _run(self, fn):
        """Run queries; a damaged or foreign file becomes one clear error naming it."""
        try:
            return fn()
        except LatencyTableError:
            raise
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                raise LatencyTableError(f"{self.path} stayed locked by another process: {err}") from err
            raise LatencyTableError(
                f"{self.path} is not a readable gpunet latency table ({err}); it is corrupt or "
                "not a SQLite file: delete it (it is rebuilt by `python -m gpunet.latency.build`) "
                "or point latency.table= elsewhere") from err

    def _write(self) -> _Transaction:
        return _Transaction(self)

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._run(lambda: self._conn.execute(
            "SELECT COUNT(*) FROM entries WHERE context_id = ?", (self.context_id,)).fetchone()[0])

    def keys(self) -> set[str]:
        return {r[0] for r in self._run(lambda: self._conn.execute(
            "SELECT key FROM entries WHERE context_id = ?", (self.context_id,)).fetchall())}

    def get(self, key: str) -> Entry | None:
        row = self._run(lambda: self._conn.execute(
            "SELECT key, fields, median_ms, p90_ms, runs, measured_at FROM entries "
            "WHERE context_id = ? AND key = ?", (self.context_id, key)).fetchone())
        if row is None:
            return None
        return Entry(row[0], json.loads(row[1]), Timing(row[2], row[3], row[4]), row[5])

    def medians_ns(self) -> dict[str, int]:
        """Every entry's median as integer nanoseconds: the integers all estimates add up."""
        rows = self._run(lambda: self._conn.execute(
            "SELECT key, median_ms FROM entries WHERE context_id = ?", (self.context_id,)).fetchall())
        return {key: round(ms * 1e6) for key, ms in rows}

    def fingerprint(self) -> str:
        """A hash of the context, every entry's median and the calibration (keys caches)."""
        h = hashlib.sha256(canonical_context(self.context).encode())
        for key, ns in sorted(self.medians_ns().items()):
            h.update(f"{key}={ns};".encode())
        h.update(repr(self.calibration()).encode())
        return h.hexdigest()

    def other_contexts(self) -> list[dict[str, Any]]:
        """Contexts in the same file with entries (tells a user why their own is empty)."""
        rows = self._run(lambda: self._conn.execute(
            "SELECT c.context, COUNT(e.key) FROM contexts c JOIN entries e ON e.context_id = c.id "
            "WHERE c.id != ? GROUP BY c.id", (self.context_id,)).fetchall())
        return [{**json.loads(text), "entries": n} for text, n in rows]

    def calibration(self) -> Calibration | None:
        row = self._run(lambda: self._conn.execute(
            "SELECT a, b, c, d, mape, networks FROM calibrations WHERE context_id = ?",
            (self.context_id,)).fetchone())
        return None if row is None else Calibration(*row)

    # -- writing ---------------------------------------------------------------------------
    def put(self, key: str, fields: Mapping[str, Any], timing: Timing) -> None:
        self.put_many([(key, fields, timing)])

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any], Timing]]) -> None:
        """Add or replace entries in one transaction."""
        rows = [(self.context_id, key, json.dumps(dict(fields), sort_keys=True), t.median_ms,
                 t.p90_ms, t.runs, _now()) for key, fields, t in items]
        for *_, median, p90, runs, _ in rows:
            if not (median > 0 and p90 >= median and runs > 0):
                raise ValueError(f"not a valid timing: median {median}, p90 {p90}, runs {runs}")
        with self._write():
            self._run(lambda: self._conn.executemany(
                "INSERT OR REPLACE INTO entries (context_id, key, fields, median_ms, p90_ms, runs, "
                "measured_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows))

    def set_calibration(self, calibration: Calibration) -> None:
        with self._write():
            self._run(lambda: self._conn.execute(
                "INSERT OR REPLACE INTO calibrations (context_id, a, b, c, d, mape, networks, "
                "fitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.context_id, calibration.a, calibration.b, calibration.c, calibration.d,
                 calibration.mape,
                 calibration.networks, _now())))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LatencyTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LatencyTable({str(self.path)!r}, {self.context})"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front (waiting for other writers).
    DEFERRED: a read transaction, so that several reads see one state of the file."""

    def __init__(self, table: LatencyTable, kind: str = "IMMEDIATE") -> None:
        self.table, self.kind = table, kind

    def __enter__(self) -> None:
        self.table._run(lambda: self.table._conn.execute(f"BEGIN {self.kind}"))

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        conn = self.table._conn
        if exc_type is None:
            self.table._run(lambda: conn.execute("COMMIT"))
        elif conn.in_transaction:
            conn.execute("ROLLBACK")
