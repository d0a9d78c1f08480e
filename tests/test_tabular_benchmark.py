"""The tabular objective (noise seeded per evaluation, regret on the mean) and NAS-Bench-Macro,
which lives in ../shared/benchmarks (developers, CI) and not in a user's clone: those tests skip."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpunet.errors import NotFoundError
from gpunet.search.tabular import (
    NAS_BENCH_MACRO_FILE,
    TabularBenchmark,
    default_benchmarks_dir,
    load_nas_bench_macro,
)

ROOT = Path(__file__).resolve().parents[1]
MACRO = default_benchmarks_dir() / NAS_BENCH_MACRO_FILE
needs_macro = pytest.mark.skipif(
    not MACRO.is_file(), reason=f"NAS-Bench-Macro not at {MACRO} (see ../shared/benchmarks/README.md)"
)


def tiny() -> TabularBenchmark:
    pool = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.int16)
    runs = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.0, 0.0, 30.0]])
    return TabularBenchmark("tiny", pool, np.array([2, 2]), runs)


def test_an_evaluation_is_one_stored_run_seeded_by_seed_evaluation_number_and_row() -> None:
    bench = tiny()
    idx = np.array([0, 1, 2, 3] * 25)
    values = bench.evaluate(idx, seed=0, first=0)
    for i, v in zip(idx, values, strict=True):
        assert v in bench.runs[i]
    np.testing.assert_array_equal(values, bench.evaluate(idx, seed=0, first=0))  # reproducible
    # the same row evaluated at another evaluation number, or under another seed, may differ
    assert len(set(values[idx == 0].tolist())) == 3
    assert not np.array_equal(values, bench.evaluate(idx, seed=1, first=0))
    # evaluation k's value does not depend on how the evaluations were batched
    np.testing.assert_array_equal(values[10:20], bench.evaluate(idx[10:20], seed=0, first=10))


def test_regret_is_measured_on_the_mean_of_the_runs() -> None:
    bench = tiny()
    np.testing.assert_allclose(bench.mean, [2.0, 5.0, 8.0, 10.0])
    assert bench.best_mean == 10.0  # row 3: its best run (30) would say otherwise, its mean rules
    assert bench.top_threshold(0.25) == 10.0 and bench.top_threshold(0.5) == 8.0


def test_a_missing_benchmark_names_the_path_and_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nas_bench_macro_cifar10.json"):
        load_nas_bench_macro(tmp_path)


@needs_macro
def test_nas_bench_macro_loads_as_the_whole_space() -> None:
    bench = load_nas_bench_macro()
    assert bench.pool.shape == (6561, 8) and bench.runs.shape == (6561, 3)
    assert len({tuple(r) for r in bench.pool.tolist()}) == 6561
    table = json.loads(MACRO.read_text())
    key = "".join(map(str, bench.pool[np.argmax(bench.mean)].tolist()))
    assert bench.best_mean == pytest.approx(table[key]["mean_acc"]) == pytest.approx(93.1267, abs=1e-3)
    assert load_nas_bench_macro(MACRO).pool.shape == (6561, 8)  # the file itself as the path


@needs_macro
@pytest.mark.slow
def test_the_benchmark_runs_two_seeds_of_40_evaluations(tmp_path: Path) -> None:
    """experiments/bench_nas_macro.py end to end, small: every searcher, q 1 and 8."""
    cmd = [sys.executable, "experiments/bench_nas_macro.py", "--seeds", "0", "1", "--budget", "40"]
    cmd += ["--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "nas_macro.md").read_text()
    main_table, paired = report.split("paired by seed")
    assert main_table.count("\n| ") == 1 + 7 * 2  # header + (searcher, q) rows
    assert "\n| 1 | 2 | " in paired and "\n| 8 | 2 | " in paired  # lamcts_bo vs bo per q, 2 seeds
    assert (tmp_path / "nas_macro_best_so_far.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "nas_macro_runs.json").read_text())) == 7 * 2 * 2
