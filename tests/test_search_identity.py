"""A search knows what it is: real `python -m gpunet.search` runs on the tiny test space that swap
configs, resume, run grids and kill the sweeper, as an ablation study does."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_search_e2e import TESTS, journal, results, run, search_cmd

from gpunet.search.identity import SearchMismatch, check_same_search, differences
from gpunet.search.journal import Trial
from gpunet.search.loop import TierPool


def default_dir_cmd(shared: Path, *overrides: str) -> list[str]:
    """The test command without a fixed hydra.sweep.dir: the default, named directory."""
    return [a for a in search_cmd(shared, Path("unused"), *overrides)
            if not a.startswith("hydra.sweep.dir=")]


def search_dirs(cwd: Path) -> list[str]:
    return sorted(p.name for p in (cwd / "outputs" / "search").iterdir())


@pytest.mark.e2e
def test_swapping_the_searcher_runs_a_new_search(shared, tmp_path):
    run(default_dir_cmd(shared, "searcher=lamcts_bo", "searcher.n_init=4", "search.n_trials=6"),
        tmp_path)
    run(default_dir_cmd(shared, "searcher=random", "search.n_trials=6"), tmp_path)
    names = search_dirs(tmp_path)
    assert names == ["tiny-cpu-onnxruntime-500ms-pm499.99-ackley-lamcts_bo-s0",
                     "tiny-cpu-onnxruntime-500ms-pm499.99-ackley-random-s0"]
    for name, searcher in zip(names, ("lamcts_bo", "random")):
        search_dir = tmp_path / "outputs" / "search" / name
        assert len(results(search_dir)) == 6  # each search ran its own trials
        assert yaml.safe_load((search_dir / "search.yaml").read_text())["searcher"]["name"] == searcher


@pytest.mark.e2e
def test_resuming_with_a_changed_knob_is_refused_and_names_the_keys(shared, tmp_path):
    sweep = tmp_path / "s"
    run(search_cmd(shared, sweep, "searcher=lamcts_bo", "searcher.n_init=4", "search.n_trials=4"),
        tmp_path)
    before = {name: (sweep / name).read_text() for name in ("journal.jsonl", "search.yaml")}
    out = run(search_cmd(shared, sweep, "searcher=lamcts_bo", "searcher.n_init=6",
                         "search.n_trials=8"), tmp_path, check=False)
    assert out.returncode != 0
    assert "searcher.n_init: 4 in the journal, 6 now" in out.stderr
    assert "new directory" in out.stderr and "original values" in out.stderr
    assert {name: (sweep / name).read_text() for name in before} == before  # nothing touched
    # settings that do not define the search may change: more trials resume it
    run(search_cmd(shared, sweep, "searcher=lamcts_bo", "searcher.n_init=4", "search.n_trials=6"),
        tmp_path)
    assert [int(r["number"]) for r in results(sweep)] == list(range(6))


@pytest.mark.e2e
def test_a_grid_after_single_searches_never_writes_into_them(shared, tmp_path):
    run(default_dir_cmd(shared, "searcher=random", "search.n_trials=4"), tmp_path)
    single = tmp_path / "outputs" / "search" / "tiny-cpu-onnxruntime-500ms-pm499.99-ackley-random-s0"
    lines_before = (single / "journal.jsonl").read_text()
    run(default_dir_cmd(shared, "searcher=random,evolution", "seed=0,1", "search.n_trials=4"),
        tmp_path)
    grid = tmp_path / "outputs" / "search" / "grid-searcher-random,evolution__seed-0,1"
    assert (grid / "comparison.csv").is_file() and (grid / "multirun.yaml").is_file()
    assert len((grid / "comparison.csv").read_text().splitlines()) == 5
    # the grid's (random, seed 0) point is the single search: resumed, nothing ran again
    assert (single / "journal.jsonl").read_text() == lines_before
    assert not (single / "comparison.csv").exists() and not (single / "multirun.yaml").exists()
    assert len(search_dirs(tmp_path)) == 5  # four searches and the grid


@pytest.mark.e2e
def test_an_overridden_tier_band_names_the_directory(shared, tmp_path):
    # a band wide enough for any machine's tiny-space latencies (0.04-0.2 ms on the ones seen)
    run(default_dir_cmd(shared, "searcher=random", "search.n_trials=2", "tier.target_ms=1.5",
                        "tier.tolerance_ms=1.49"), tmp_path)
    assert search_dirs(tmp_path) == ["tiny-cpu-onnxruntime-1.5ms-pm1.49-ackley-random-s0"]


@pytest.mark.e2e
def test_kill_and_resume_over_a_pool_with_repeated_networks_matches_an_uninterrupted_run(
        shared, tmp_path):
    """The tiny space has 4,608 networks and 4,096 Sobol samples repeat many of them; a resumed
    search must propose exactly what an uninterrupted one does, and never train a network twice."""
    args = ("searcher=random", "search.n_trials=30")
    reference = tmp_path / "reference"
    run(search_cmd(shared, reference, *args), tmp_path)
    sweep = tmp_path / "killed"
    cmd = search_cmd(shared, sweep, *args)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(TESTS)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        if (sweep / "journal.jsonl").exists() and sum(
                j["status"] == "completed" for j in journal(sweep)) >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 10 <= sum(j["status"] == "completed" for j in journal(sweep)) < 30
    run(cmd, tmp_path)
    encodings = [r["encoding"] for r in results(sweep)]
    assert len(set(encodings)) == 30  # no network trained twice
    assert encodings == [r["encoding"] for r in results(reference)]
    rows = [j["pool_index"] for j in journal(sweep) if j["status"] == "completed"]
    assert len(set(rows)) == 30 and all(isinstance(r, int) for r in rows)


def test_a_journaled_trial_must_match_its_pool_row():
    pool = TierPool(np.array([[0, 1], [1, 0]], dtype=np.int16), np.array([1.0, 1.1]))
    assert pool.row_of(Trial(0, 0, [1, 0], 1.1, pool_index=1)) == 1
    with pytest.raises(ValueError, match="pool changed"):
        pool.row_of(Trial(0, 0, [1, 0], 1.1, pool_index=0))


def test_a_search_journaled_before_the_kernel_knob_resumes_with_the_ordinal_kernel():
    """A journal written before `searcher.kernel` existed used the ordinal kernel: the default
    config (ordinal) resumes it, a categorical one is refused."""
    before = {"searcher": {"name": "bo", "n_init": 4}, "seed": 0}
    now = {"searcher": {"name": "bo", "n_init": 4, "kernel": "ordinal"}, "seed": 0}
    check_same_search(before, now, "d")
    with pytest.raises(SearchMismatch, match="searcher.kernel: 'ordinal' in the journal, 'categorical' now"):
        check_same_search(before, {**now, "searcher": {**now["searcher"], "kernel": "categorical"}}, "d")


@pytest.mark.parametrize(("knob", "value"), [("n_generated", 1000), ("screened_per_row", 1000)])
def test_a_search_journaled_before_a_knob_existed_resumes_with_it_set_to_0(knob, value):
    before = {"searcher": {"name": "lamcts_bo", "n_init": 4}, "seed": 0}
    now = {"searcher": {"name": "lamcts_bo", "n_init": 4, knob: value}, "seed": 0}
    assert differences(before, now) == [(f"searcher.{knob}", 0, value)]
    with pytest.raises(SearchMismatch, match=f"searcher.{knob}: 0 in the journal, {value} now"):
        check_same_search(before, now, "d")
    check_same_search(before, {**now, "searcher": {**now["searcher"], knob: 0}}, "d")
    random = {"searcher": {"name": "random"}, "seed": 0}  # no GP step, no such knob
    assert differences(random, random) == []
