"""The asynchronous schedule with a real launcher (joblib, 2 worker processes): jobs stay in
flight, results are observed as they arrive, and the journal's semantics are the synchronous
ones (failures, exhaustion, the failure-rate stop, kill and resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from omegaconf import OmegaConf
from test_search_e2e import TESTS, journal, results, run, search_cmd

pytestmark = pytest.mark.e2e  # the apps run in subprocesses (the e2e marker: pyproject.toml)

JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


def latest(sweep) -> dict[int, dict]:
    return {line["number"]: line for line in journal(sweep)}


@pytest.mark.parametrize("launcher", ["joblib", "gpunet_joblib"])
def test_a_slow_job_does_not_hold_back_the_others(shared, tmp_path, launcher):
    sweep = tmp_path / "s"
    out = run(search_cmd(shared, sweep, f"hydra/launcher={launcher}", "hydra.launcher.n_jobs=2",
                         "objective=timed", "searcher=random", "search.n_trials=12"), tmp_path)
    # the batch fills the launcher's 2 workers: a third job waits in its queue
    assert "asynchronous: 2 jobs in flight, 1 more queued" in out.stdout + out.stderr
    trials = list(latest(sweep).values())
    assert [t["status"] for t in trials] == ["completed"] * 12
    spans = [(t["extra"]["started_at"], t["extra"]["ended_at"]) for t in trials]
    slow = [(a, b) for a, b in spans if b - a > 1.5]
    assert slow, "no candidate took the slow path"
    # while a slow job ran, the other worker finished a job and started the next one: without
    # the round barrier, jobs start and end at any time, never more than 2 at once
    assert any(a0 < a < b < b0 for a0, b0 in slow for a, b in spans)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    assert max(sum(step for _, step in events[:i + 1]) for i in range(len(events))) == 2
    jobs = sorted(t["job"] for t in trials)
    assert jobs == list(range(12))
    for trial in trials:  # each job ran with its own composed config, where Hydra puts it
        hydra_dir = sweep / "trials" / f"{trial['number']:04d}" / ".hydra"
        config = OmegaConf.load(hydra_dir / "config.yaml")
        assert list(config.trial.encoding) == trial["encoding"]
        assert OmegaConf.load(hydra_dir / "hydra.yaml").hydra.job.num == trial["job"]


def test_failures_are_recorded_and_the_pool_runs_out_cleanly(shared, tmp_path):
    sweep = tmp_path / "s"
    run(search_cmd(shared, sweep, *JOBLIB, "objective=flaky", "searcher=bo", "searcher.n_init=3",
                   "search.n_trials=12", "search.pool.samples=8", "search.max_failure_rate=1.0",
                   "searcher.n_generated=0"),  # the pool only: it runs out
        tmp_path)
    trials = list(latest(sweep).values())
    assert len(trials) == 8  # the pool holds 8 networks: all of them ran, none twice
    assert len({tuple(t["encoding"]) for t in trials}) == len({t["pool_index"] for t in trials}) == 8
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and all("injected failure" in t["error"] for t in failed)
    assert all(t["status"] in ("completed", "failed") for t in trials)


def test_the_failure_rate_stop_waits_for_running_jobs(shared, tmp_path):
    sweep = tmp_path / "s"
    out = run(search_cmd(shared, sweep, *JOBLIB, "objective=flaky", "searcher=random",
                         "search.n_trials=40", "search.max_failure_rate=0.0",
                         "search.min_trials_before_failure_check=2"), tmp_path, check=False)
    assert out.returncode != 0 and "stopping the search" in out.stderr
    trials = list(latest(sweep).values())
    assert trials and all(t["status"] != "running" for t in trials)  # nothing left in flight
    assert len(results(sweep)) == len(trials) < 40


def test_kill_with_jobs_in_flight_and_resume(shared, tmp_path):
    sweep = tmp_path / "s"
    cmd = search_cmd(shared, sweep, *JOBLIB, "objective=timed", "searcher=bo",
                     "searcher.n_init=4", "search.n_trials=14")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(TESTS)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        state = latest(sweep) if (sweep / "journal.jsonl").exists() else {}
        done = sum(t["status"] == "completed" for t in state.values())
        if done >= 5 and any(t["status"] == "running" for t in state.values()):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweeper and its joblib workers
    proc.wait()
    before = latest(sweep)
    in_flight = {n for n, t in before.items() if t["status"] == "running"}
    assert in_flight and 5 <= len(before) - len(in_flight) < 14
    run(cmd, tmp_path)
    after = latest(sweep)
    assert sorted(after) == list(range(14))  # nothing lost
    assert all(t["status"] == "completed" for t in after.values())
    assert len({tuple(t["encoding"]) for t in after.values()}) == 14  # nothing run twice
    for n, t in before.items():  # finished trials kept; interrupted ones ran again, same network
        if n in in_flight:
            assert after[n]["encoding"] == t["encoding"] and after[n]["job"] > t["job"]
        else:
            assert after[n] == t
    jobs = [line["job"] for line in journal(sweep) if line["status"] == "running"]
    assert len(jobs) == len(set(jobs))  # job numbers continue, never reused
