"""The SQLite latency table: entries, contexts, calibration, concurrent writers, bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from gpunet.latency.table import Calibration, LatencyTable, LatencyTableError
from gpunet.latency.timing import Timing, summarize

CTX = {"device": "cpu", "backend": "onnxruntime", "versions": {"onnxruntime": "1.0"}}


def test_entries_round_trip_and_medians_become_integer_nanoseconds(tmp_path):
    table = LatencyTable(tmp_path / "t.sqlite", CTX)
    table.put("a", {"kind": "layer"}, Timing(0.0123456789, 0.02, 50))
    table.put("b", {"kind": "head"}, Timing(1.5, 1.7, 50))
    assert len(table) == 2 and table.keys() == {"a", "b"}
    entry = table.get("a")
    assert entry.timing == Timing(0.0123456789, 0.02, 50) and entry.fields == {"kind": "layer"}
    assert table.medians_ns() == {"a": 12346, "b": 1_500_000}
    assert table.get("missing") is None
    table.put("a", {"kind": "layer"}, Timing(0.5, 0.6, 10))  # re-measuring replaces
    assert len(table) == 2 and table.get("a").timing.median_ms == 0.5


def test_file_is_in_wal_mode_and_contexts_are_separate(tmp_path):
    path = tmp_path / "t.sqlite"
    LatencyTable(path, CTX).put("a", {}, Timing(0.1, 0.1, 1))
    other = LatencyTable(path, {**CTX, "versions": {"onnxruntime": "2.0"}})
    assert len(other) == 0 and other.other_contexts() == [{**CTX, "entries": 1}]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_calibration_and_fingerprint(tmp_path):
    table = LatencyTable(tmp_path / "t.sqlite", CTX)
    table.put("a", {}, Timing(0.1, 0.1, 1))
    assert table.calibration() is None
    before = table.fingerprint()
    table.set_calibration(Calibration(0.9, 0.001, -0.02, 0.1, 2.5, 40))
    assert table.calibration() == Calibration(0.9, 0.001, -0.02, 0.1, 2.5, 40)
    assert table.fingerprint() != before
    calibrated = table.fingerprint()
    table.put("a", {}, Timing(0.2, 0.2, 1))
    assert table.fingerprint() != calibrated


@pytest.mark.parametrize("timing", [Timing(0.0, 0.1, 5), Timing(0.2, 0.1, 5), Timing(0.1, 0.1, 0)])
def test_invalid_timings_are_refused(tmp_path, timing):
    with pytest.raises(ValueError, match="not a valid timing"):
        LatencyTable(tmp_path / "t.sqlite", CTX).put("a", {}, timing)


def test_summarize_gives_median_and_p90():
    assert summarize([1.0, 2.0, 3.0, 4.0, 100.0]) == Timing(3.0, pytest.approx(61.6), 5)
    with pytest.raises(ValueError):
        summarize([])


def test_a_file_that_is_not_sqlite_gives_a_clear_error(tmp_path):
    path = tmp_path / "t.sqlite"
    path.write_bytes(b"definitely not a database " * 100)
    with pytest.raises(LatencyTableError, match=r"t\.sqlite is not a readable gpunet latency table"):
        LatencyTable(path, CTX)
    assert path.read_bytes().startswith(b"definitely")  # left untouched


def test_a_damaged_table_gives_a_clear_error(tmp_path):
    path = tmp_path / "t.sqlite"
    table = LatencyTable(path, CTX)
    table.put_many([(f"k{i}", {"pad": "x" * 500}, Timing(0.1, 0.1, 1)) for i in range(200)])
    table.close()
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    data = bytearray(path.read_bytes())
    data[4096:len(data)] = b"\xff" * (len(data) - 4096)  # wreck every page after the first
    path.write_bytes(bytes(data))
    with pytest.raises(LatencyTableError, match="corrupt"):
        LatencyTable(path, CTX).medians_ns()


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(LatencyTableError, match=r"not a gpunet latency table \(it has tables \['users'\]\)"):
        LatencyTable(path, CTX)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("DROP TABLE users")
    conn.commit()
    conn.close()
    with pytest.raises(LatencyTableError, match="another application"):
        LatencyTable(path, CTX)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "t.sqlite"
    LatencyTable(path, CTX).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(LatencyTableError, match="newer gpunet"):
        LatencyTable(path, CTX)


def test_a_schema_1_table_keeps_its_calibration_without_a_weights_term(tmp_path):
    """Tables written before the calibration had a weights term open, and estimate as before."""
    import json

    from gpunet.latency.table import APPLICATION_ID

    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(f"""
        CREATE TABLE contexts (id INTEGER PRIMARY KEY, context TEXT NOT NULL UNIQUE);
        CREATE TABLE entries (context_id INTEGER NOT NULL, key TEXT NOT NULL, fields TEXT NOT NULL,
            median_ms REAL NOT NULL, p90_ms REAL NOT NULL, runs INTEGER NOT NULL,
            measured_at TEXT NOT NULL, PRIMARY KEY (context_id, key));
        CREATE TABLE calibrations (context_id INTEGER PRIMARY KEY, a REAL NOT NULL, b REAL NOT NULL,
            c REAL NOT NULL, mape REAL NOT NULL, networks INTEGER NOT NULL, fitted_at TEXT NOT NULL);
        PRAGMA application_id = {APPLICATION_ID};
        PRAGMA user_version = 1;
    """)
    conn.execute("INSERT INTO contexts (id, context) VALUES (1, ?)",
                 (json.dumps(CTX, sort_keys=True, separators=(",", ":")),))
    conn.execute("INSERT INTO calibrations VALUES (1, 0.9, 0.001, -0.02, 2.5, 40, 'then')")
    conn.commit()
    conn.close()
    table = LatencyTable(path, CTX)
    assert table.calibration() == Calibration(0.9, 0.001, -0.02, 0.0, 2.5, 40)
    table.set_calibration(Calibration(1.0, 0.0, 0.0, 0.1, 1.0, 10))  # the new column is written
    assert table.calibration().d == 0.1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


WRITER = textwrap.dedent("""
    import pathlib, sys, time
    from gpunet.latency.table import LatencyTable
    from gpunet.latency.timing import Timing
    path, worker, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), pathlib.Path(sys.argv[4])
    (go.parent / f"ready{worker}").touch()  # imports done
    while not go.exists():
        time.sleep(0.005)
    table = LatencyTable(path, {"device": "cpu", "backend": "onnxruntime"})  # all create it at once
    for i in range(n):
        table.put(f"w{worker}-{i}", {"worker": worker}, Timing(0.001 * (i + 1), 0.002 * (i + 1), 3))
""")


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    workers, n = 3, 80
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(n), str(go)],
                              stderr=subprocess.PIPE, text=True) for w in range(workers)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{w}").exists() for w in range(workers)):  # all waiting on `go`
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    table = LatencyTable(path, {"device": "cpu", "backend": "onnxruntime"})
    medians = table.medians_ns()
    assert len(medians) == workers * n
    assert all(medians[f"w{w}-{i}"] == 1000 * (i + 1) for w in range(workers) for i in range(n))
