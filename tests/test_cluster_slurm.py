"""Searches and training on a real SLURM cluster (`hydra/launcher=submitit_slurm`).

They need a cluster that answers `sinfo`: CI starts a one-node one on the machine itself
(`scripts/local_slurm.sh up`, from `.ci/run`); anywhere else they skip and say why. Clients find
the cluster through SLURM_CONF, or the local script's default folder when that is up.

The jobs here run `recording_objective` (below, imported by the jobs through PYTHONPATH, which
sbatch exports with the rest of the environment): every run of a trial writes its own start and
end times, host and SLURM ids into its trial directory, so concurrency and re-runs are proven from
what the jobs recorded, never from wall-clock guesses. Small files in a search's directory steer
it: `barrier` (jobs of a batch of that size wait until all of them started), `fail` (trial numbers
that raise), `crash` (trial numbers whose process dies) and `hold` (trial numbers that wait for a
`release` file).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WAIT_S = 240  # the longest any condition is waited for (a loaded 2-core machine)


# --------------------------------------------------------------------------------------------
# The objective the jobs run (on a SLURM node, a Ray worker or in the sweeper)


def _numbers(path: Path) -> set[int]:
    return {int(x) for x in path.read_text().split()} if path.is_file() else set()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def recording_objective(encoding: list[int], cardinalities: np.ndarray) -> float:
    """A smooth value of the encoding; records this run in its trial directory (see the module
    docstring for the files that make it wait or fail)."""
    from hydra.core.hydra_config import HydraConfig

    trial_dir = Path(HydraConfig.get().runtime.output_dir)
    search_dir = trial_dir.parent.parent
    number = int(trial_dir.name)
    where = {"host": socket.gethostname(), "pid": os.getpid(),
             **{k.lower(): v for k, v in os.environ.items()
                if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")}}
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            where["ray_task"] = ray.get_runtime_context().get_task_id()
    record = {"trial": number, "start": time.time(), "end": None, **where}
    path = trial_dir / f"run-{os.getpid()}-{time.time_ns()}.json"
    _write_json(path, record)

    def finish(*_args: object) -> None:
        record["end"] = time.time()
        _write_json(path, record)

    def on_sigterm(*_args: object) -> None:  # cancelled: record when, then go
        finish()
        os._exit(143)

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        barrier = search_dir / "barrier"
        if barrier.is_file():
            size = int(barrier.read_text())
            first = number - number % size
            peers = [search_dir / "trials" / f"{n:04d}" for n in range(first, first + size)]
            _wait(lambda: all(any(p.glob("run-*.json")) for p in peers), 60)
        if number in _numbers(search_dir / "hold"):
            _wait(lambda: (search_dir / "release").exists(), 300)
        if number in _numbers(search_dir / "crash"):  # the worker process dies mid-job
            os._exit(3)
        if number in _numbers(search_dir / "fail"):
            slurm = f", SLURM job {where['slurm_job_id']}" if "slurm_job_id" in where else ""
            raise RuntimeError(f"injected failure on {where['host']} (pid {where['pid']}{slurm})")
        x = np.asarray(encoding) / np.maximum(np.asarray(cardinalities) - 1, 1)
        return -float(np.sum((x - 0.5) ** 2))
    finally:
        finish()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------
# Helpers shared with test_cluster_ray.py


def search_cmd(cache: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    """A search on the tiny test space (as tests/test_search_e2e.py runs them) whose jobs run
    `recording_objective`; the table and pool cache live in `cache`."""
    return [sys.executable, "-m", "gpunet.search", "search_space=tiny", "objective=flaky",
            "objective.name=recording", "objective._target_=test_cluster_slurm.recording_objective",
            f"hydra.searchpath=[file://{TESTS / 'conf'}]",
            f"latency.table={cache / 'tiny.sqlite'}", "latency.runs=5", "latency.warmup=2",
            f"search.pool.cache_dir={cache / 'pools'}", "search.pool.samples=4096",
            "tier.target_ms=500", "tier.tolerance_ms=499.99", f"hydra.sweep.dir={sweep_dir}",
            f"hub.dir={cache / 'hub'}", "searcher=random", "search.batch_size=2",
            "search.max_failure_rate=1.0", "search.n_trials=8", *overrides]


def synchronous() -> list[str]:
    """Overrides for rounds of batch_size jobs (one SLURM job array per round), where the search
    also has an asynchronous mode (one job per trial, batch_size in flight)."""
    from gpunet.paths import CONF_DIR

    search = yaml.safe_load((Path(CONF_DIR) / "search.yaml").read_text())["search"]
    return ["search.asynchronous=false"] if "asynchronous" in search else []


def latest(lines: list[dict]) -> dict[int, dict]:
    """Each trial's last journal line."""
    return {t["number"]: t for t in lines}


def job_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
    return out


def trial_lines(sweep_dir: Path) -> list[dict]:
    """The journal's trial lines (its first line is the search's definition)."""
    lines = [json.loads(x) for x in (sweep_dir / "journal.jsonl").read_text().splitlines() if x]
    return [x for x in lines if "number" in x]


def results(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def runs(sweep_dir: Path) -> list[dict]:
    """Every run `recording_objective` recorded, in start order."""
    records = [json.loads(p.read_text()) for p in (sweep_dir / "trials").glob("*/run-*.json")]
    return sorted(records, key=lambda r: r["start"])


def assert_batches_overlapped(sweep_dir: Path, batches: list[list[int]]) -> list[dict]:
    """Each batch's runs were all running at one moment: every start before every end."""
    by_trial = {r["trial"]: r for r in runs(sweep_dir)}
    for batch in batches:
        rs = [by_trial[n] for n in batch]
        assert all(r["end"] is not None for r in rs), rs
        latest_start, earliest_end = max(r["start"] for r in rs), min(r["end"] for r in rs)
        assert latest_start < earliest_end, f"trials {batch} did not run at once: {rs}"
    return list(by_trial.values())


def prepare(sweep_dir: Path, **files: str) -> Path:
    sweep_dir.mkdir(parents=True)
    for name, text in files.items():
        (sweep_dir / name).write_text(text)
    return sweep_dir


# --------------------------------------------------------------------------------------------
# The cluster


def _slurm_conf() -> str | None:
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"]
    folder = os.environ.get("GPUNET_SLURM_DIR") or os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                "gpunet-slurm")
    conf = os.path.join(folder, "slurm.conf")
    return conf if os.path.isfile(conf) else None


def squeue(env: dict[str, str], *args: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", *args], env=env, capture_output=True, text=True, timeout=30)
    return out.stdout.split()


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The environment of a client of a SLURM cluster with 2 free CPUs; skips without one."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here (no sinfo): apt-get install slurm-wlm munge, then "
                    "scripts/local_slurm.sh up (as root), or run on a cluster's login node")
    env = job_env()
    conf = _slurm_conf()
    if conf:
        env["SLURM_CONF"] = conf
        stand_in = Path(conf).parent / "bin"  # scripts/local_slurm.sh's sacct, for submitit
        if (stand_in / "sacct").is_file() and str(stand_in) not in env["PATH"].split(os.pathsep):
            env["PATH"] = os.pathsep.join((str(stand_in), env["PATH"]))
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T %C"], env=env, capture_output=True,
                             text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("no SLURM cluster answers (sinfo timed out): scripts/local_slurm.sh up")
    states = out.stdout.split()
    if out.returncode != 0 or not states:
        said = ((out.stderr or out.stdout).strip().splitlines() or ["no nodes"])[-1]
        pytest.skip(f"no SLURM cluster answers (sinfo: {said}): scripts/local_slurm.sh up")
    idle_cpus = sum(int(c.split("/")[1]) for c in states[1::2])
    if idle_cpus < 2:
        pytest.skip(f"the SLURM cluster has {idle_cpus} idle CPU(s); these tests need 2 ({states})")
    before = set(squeue(env, "-o", "%A"))
    yield env
    left = sorted(set(squeue(env, "-o", "%A")) - before)  # jobs these tests left behind
    if left:
        subprocess.run(["scancel", *left], env=env, timeout=30)


@pytest.fixture(scope="module")
def reference(shared, tmp_path_factory) -> Path:
    """The search the SLURM one is compared with, run by the basic launcher: same settings, same
    failing trial, no barrier (one job at a time). It builds the latency table and pool."""
    sweep = prepare(tmp_path_factory.mktemp("reference") / "s", fail="3")
    run(search_cmd(shared, sweep, "hydra/launcher=basic", "search.n_trials=4"), sweep.parent, job_env())
    return sweep


# --------------------------------------------------------------------------------------------
# (a) + (d): a search whose batches run as job arrays


@pytest.fixture(scope="module")
def slurm_search(slurm, reference, shared, tmp_path_factory) -> Path:
    sweep = prepare(tmp_path_factory.mktemp("slurm") / "s", barrier="2", fail="3")
    start = time.monotonic()
    run(search_cmd(shared, sweep, "hydra/launcher=submitit_slurm",
                   "hydra.launcher.array_parallelism=2", "hydra.launcher.timeout_min=10",
                   "search.n_trials=4", *synchronous()), sweep.parent, slurm)
    print(f"SLURM search of 4 trials: {time.monotonic() - start:.1f} s")
    return sweep


def test_slurm_search_runs_each_batch_as_concurrent_array_tasks(slurm_search, reference):
    sweep = slurm_search
    recorded = assert_batches_overlapped(sweep, [[0, 1], [2, 3]])
    for batch in ([0, 1], [2, 3]):  # one job array per batch, one task per trial
        rs = [r for r in recorded if r["trial"] in batch]
        assert len({r["slurm_array_job_id"] for r in rs}) == 1, rs
        assert sorted(r["slurm_array_task_id"] for r in rs) == ["0", "1"], rs
    assert len({r["slurm_array_job_id"] for r in recorded}) == 2
    # the same outputs as the local launcher's: every trial, value and failure
    mine, theirs = results(sweep), results(reference)
    assert list(mine[0]) == list(theirs[0])
    keep = ("number", "job", "status", "value", "encoding", "est_latency_ms")
    assert [{k: r[k] for k in keep} for r in mine] == [{k: r[k] for k in keep} for r in theirs]
    fields = ("number", "job", "status", "value", "encoding")
    assert [[t[k] for k in fields] for t in trial_lines(sweep)] == \
        [[t[k] for k in fields] for t in trial_lines(reference)]
    best, best_ref = (yaml.safe_load((d / "best.yaml").read_text()) for d in (sweep, reference))
    assert best.keys() == best_ref.keys() and best["encoding"] == best_ref["encoding"]
    assert {p.name for p in sweep.iterdir()} >= {p.name for p in reference.iterdir()}
    for n in range(4):  # each job in its own trial directory, with Hydra's files
        hydra_cfg = yaml.safe_load((sweep / "trials" / f"{n:04d}" / ".hydra" / "hydra.yaml").read_text())
        assert hydra_cfg["hydra"]["job"]["num"] == n
    assert any((sweep / ".submitit").iterdir())


def test_a_job_failing_on_the_node_is_recorded_with_the_nodes_error(slurm_search):
    rows = {int(r["number"]): r for r in results(slurm_search)}
    assert [rows[n]["status"] for n in range(4)] == ["completed"] * 3 + ["failed"]
    run_3 = next(r for r in runs(slurm_search) if r["trial"] == 3)
    error = rows[3]["error"]
    assert error.startswith("RuntimeError: injected failure on ")
    assert f"(pid {run_3['pid']}, SLURM job {run_3['slurm_job_id']})" in error  # the node's own words
    failed = [t for t in trial_lines(slurm_search) if t["status"] == "failed"]
    assert [t["number"] for t in failed] == [3] and failed[0]["error"] == error


# --------------------------------------------------------------------------------------------
# (b): preemption of a training job


def test_a_requeued_training_job_resumes_from_its_checkpoint_and_loses_no_epoch(slurm, tmp_path):
    """`python -m gpunet.train` as a requeueable batch job; `scontrol requeue` kills it after its
    first checkpoint and SLURM starts it again: it resumes from last.ckpt, and over both attempts
    every epoch is trained exactly once."""
    epochs = 4
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    smallest = "[" + ",".join(["0"] * 41) + "]"
    script = run_dir / "train.sh"
    script.write_text("#!/bin/bash\n"
                      f"exec {sys.executable} -m gpunet.train search_space=gpunet 'arch={smallest}' "
                      f"data=digits data.resolution=32 recipe.epochs={epochs} "
                      f"trainer.enable_progress_bar=false hydra.run.dir={run_dir}\n")
    submit = subprocess.run(["sbatch", "--parsable", "--requeue", "--job-name=gpunet-preempt",
                             "--cpus-per-task=1", "--open-mode=append", f"--chdir={tmp_path}",
                             f"--output={run_dir}/slurm-%j.out", str(script)],
                            env=slurm, capture_output=True, text=True, timeout=30)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    last, curve_file = run_dir / "last.ckpt", run_dir / "curve.json"

    def state() -> dict[str, str]:
        out = subprocess.run(["scontrol", "-o", "show", "job", job], env=slurm,
                             capture_output=True, text=True, timeout=30).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def curve() -> list[float]:
        return json.loads(curve_file.read_text())["curve"] if curve_file.is_file() else []

    start = time.monotonic()
    assert _wait(lambda: last.is_file() or state().get("JobState") not in ("PENDING", "RUNNING"),
                 WAIT_S) and last.is_file(), f"no checkpoint: {state()}"
    assert subprocess.run(["scontrol", "requeue", job], env=slurm, timeout=30).returncode == 0
    done_at_requeue = len(curve())
    assert 1 <= done_at_requeue < epochs, "the job was not requeued mid-run"
    assert _wait(lambda: state().get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
                 WAIT_S), state()
    info = state()
    print(f"preempted training job: {time.monotonic() - start:.1f} s from submission to the end")
    log = "".join(p.read_text() for p in run_dir.glob("slurm-*.out"))
    assert info["JobState"] == "COMPLETED", f"{info}\n{log[-3000:]}"
    assert info["Restarts"] == "1"  # it really ran twice
    assert "DUE TO JOB REQUEUE" in log
    assert len(curve()) == epochs
    attempts = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    assert len(attempts) == 2  # one CSV log per attempt
    trained = []
    for attempt in attempts:
        with open(attempt) as f:
            trained.append([int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/top1")])
    first, second = trained
    assert 1 <= len(first) < epochs and len(first) >= done_at_requeue, trained  # killed mid-run
    assert first + second == list(range(epochs)), trained  # resumed: every epoch exactly once


@pytest.mark.slow
def test_a_requeued_search_trial_resumes_from_its_checkpoint(slurm, shared, tmp_path):
    """The same through a search (objective=train, submitit_slurm): the trial's job is requeued
    mid-training; submitit ignores the SIGTERM, SLURM kills and requeues it, the job runs the
    same trial again in the same directory, which resumes from last.ckpt; the sweeper, waiting
    all along, records one completed trial with every epoch trained once. (Slow: not in CI.)"""
    epochs = 4
    sweep = prepare(tmp_path / "s")
    cmd = search_cmd(shared, sweep, "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10",
                     "objective=train", "search.early_stopping=false", "search.batch_size=1",
                     "search.n_trials=1", f"recipe.epochs={epochs}", "data.resolution=32",
                     "trainer.enable_progress_bar=false")
    cmd = [c for c in cmd if not c.startswith(("objective.name=", "objective._target_="))]
    trial_dir = sweep / "trials" / "0000"
    sweeper = subprocess.Popen(cmd, cwd=tmp_path, env=slurm, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert _wait(lambda: (trial_dir / "last.ckpt").is_file() or sweeper.poll() is not None,
                     WAIT_S) and sweeper.poll() is None, "the trial never checkpointed"
        (job,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
        assert subprocess.run(["scontrol", "requeue", job], env=slurm, timeout=30).returncode == 0
        out, err = sweeper.communicate(timeout=600)
        assert sweeper.returncode == 0, f"{out[-3000:]}\n{err[-6000:]}"
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
    info = subprocess.run(["scontrol", "-o", "show", "job", job], env=slurm, capture_output=True,
                          text=True, timeout=30).stdout
    assert "Restarts=1" in info and "JobState=COMPLETED" in info, info
    (row,) = results(sweep)
    assert row["status"] == "completed" and int(row["epochs"]) == epochs
    trained = []
    for attempt in sorted((trial_dir / "csv").glob("version_*/metrics.csv")):
        with open(attempt) as f:
            trained.append([int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/top1")])
    assert len(trained) == 2 and 1 <= len(trained[0]) < epochs, trained
    assert trained[0] + trained[1] == list(range(epochs)), trained  # every epoch exactly once


class SweeperCrashed(AssertionError):
    """The search command failed instead of recording the trial."""


@pytest.mark.slow
@pytest.mark.parametrize("mode", [
    "asynchronous",
    "synchronous",
])
def test_a_job_cancelled_on_the_cluster_is_recorded_failed(slurm, shared, tmp_path, mode):
    """`scancel` of a running trial's job: the trial is recorded failed with SLURM's state and
    the search goes on. (Needs sacct, or scripts/local_slurm.sh's stand-in for it, to learn that a
    job without a result has ended.)"""
    sweep = prepare(tmp_path / "s", hold="1")
    cmd = search_cmd(shared, sweep, "hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=2",
                     "hydra.launcher.timeout_min=10", "search.n_trials=4",
                     *(synchronous() if mode == "synchronous" else []))
    sweeper = subprocess.Popen(cmd, cwd=tmp_path, env=slurm, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        held = sweep / "trials" / "0001"
        assert _wait(lambda: any(held.glob("run-*.json")) or sweeper.poll() is not None, WAIT_S)
        (job,) = [json.loads(p.read_text())["slurm_job_id"] for p in held.glob("run-*.json")]
        subprocess.run(["scancel", job], env=slurm, timeout=30, check=True)
        out, err = sweeper.communicate(timeout=300)
    finally:
        (sweep / "release").touch()
        if sweeper.poll() is None:
            sweeper.kill()
    if sweeper.returncode != 0:
        raise SweeperCrashed(f"exit {sweeper.returncode}: {err[-2000:]}")
    rows = {int(r["number"]): r for r in results(sweep)}
    assert rows[1]["status"] == "failed" and "CANCELLED" in rows[1]["error"], rows[1]
    assert [rows[n]["status"] for n in (0, 2, 3)] == ["completed"] * 3


# --------------------------------------------------------------------------------------------
# (c): the sweeper killed mid-search and run again


class TrialRanTwiceAtOnce(AssertionError):
    """Two jobs of one trial were running at the same time."""


def waits_for_the_lock(sweep: Path, trial: int) -> bool:
    """A second job of `trial` has started and is waiting for the first one's lock."""
    return any("waiting for it to end" in log.read_text(errors="replace")
               for log in (sweep / "trials" / f"{trial:04d}").glob("*.log"))


@pytest.fixture(scope="module")
def killed_and_rerun(slurm, shared, tmp_path_factory) -> tuple[Path, list[dict], list[dict]]:
    """A search of 4 trials in the search's default mode, killed (SIGKILL) while trial 2's job
    runs on the cluster, held there (`hold`) after trial 3 has finished; then the same command
    again, and trial 2 released once its new job runs (or after a minute). Returns the sweep
    directory, the journal's trial lines at the kill and the runs recorded by then."""
    sweep = prepare(tmp_path_factory.mktemp("killed") / "s", barrier="2", hold="2")
    cmd = search_cmd(shared, sweep, "hydra/launcher=submitit_slurm",
                     "hydra.launcher.array_parallelism=2", "hydra.launcher.timeout_min=10",
                     "search.n_trials=4")

    def recorded(trial: int, ended: bool = False) -> list[dict]:
        if not (sweep / "trials").is_dir():
            return []
        return [r for r in runs(sweep) if r["trial"] == trial and (r["end"] or not ended)]

    first = subprocess.Popen(cmd, cwd=sweep.parent, env=slurm, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    second = None
    try:
        assert _wait(lambda: (recorded(2) and recorded(3, ended=True)) or first.poll() is not None,
                     WAIT_S), "trials 2 and 3 never ran"
        assert first.poll() is None, f"the search ended before it was killed ({first.returncode})"
        first.send_signal(signal.SIGKILL)
        first.wait()
        at_kill, runs_at_kill = trial_lines(sweep), runs(sweep)
        second = subprocess.Popen(cmd, cwd=sweep.parent, env=slurm, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        # the re-run's job of trial 2 starts while the first one still runs on the cluster
        assert _wait(lambda: waits_for_the_lock(sweep, 2) or second.poll() is not None, WAIT_S)
        (sweep / "release").touch()
        out, err = second.communicate(timeout=600)
        assert second.returncode == 0, f"{out[-3000:]}\n{err[-6000:]}"
    finally:
        (sweep / "release").touch()  # never leave a held job behind
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    return sweep, at_kill, runs_at_kill


def test_killed_sweeper_rerun_loses_nothing_repeats_nothing_and_continues_job_numbers(killed_and_rerun):
    sweep, at_kill, runs_at_kill = killed_and_rerun
    assert_batches_overlapped(sweep, [[0, 1]])  # 2 jobs at once in the default mode too
    state = latest(at_kill)
    finished_at_kill = {n: t for n, t in state.items() if t["status"] in ("completed", "failed")}
    interrupted = {n for n, t in state.items() if t["status"] == "running"}
    assert 2 in interrupted and {0, 1} <= set(finished_at_kill), state  # killed mid-search
    assert set(finished_at_kill) | interrupted == {0, 1, 2, 3}
    lines = trial_lines(sweep)
    final = latest(lines)
    assert sorted(final) == [0, 1, 2, 3] and all(t["status"] == "completed" for t in final.values())
    assert len({tuple(t["encoding"]) for t in final.values()}) == 4
    for n, line in finished_at_kill.items():  # nothing finished ran again
        assert final[n] == line
        assert len([r for r in runs(sweep) if r["trial"] == n]) == len(
            [r for r in runs_at_kill if r["trial"] == n]) == 1
    for n in interrupted:  # its job outlived the sweeper: the re-run's job waited for it and
        # took its result, so the trial ran once and nothing was trained twice
        assert len([r for r in runs(sweep) if r["trial"] == n]) == 1
    jobs_before = [t["job"] for t in at_kill if t["status"] == "running"]
    jobs = [t["job"] for t in lines if t["status"] == "running"]
    assert jobs[:len(jobs_before)] == jobs_before and len(set(jobs)) == len(jobs)
    # job numbers continue: the re-run's jobs follow the killed run's, in order
    assert jobs[len(jobs_before):] == list(range(max(jobs_before) + 1, max(jobs_before) + 1 +
                                                 len(interrupted)))
    assert all(final[n]["job"] > max(jobs_before) for n in interrupted)
    assert [int(r["number"]) for r in results(sweep)] == [0, 1, 2, 3]


def test_killed_sweeper_rerun_never_runs_a_trial_twice_at_once(killed_and_rerun):
    sweep, _, _ = killed_and_rerun
    for n in range(4):
        mine = [r for r in runs(sweep) if r["trial"] == n]
        for a, b in zip(mine, mine[1:]):
            if b["start"] < (a["end"] or math.inf):  # no end: never seen ending
                raise TrialRanTwiceAtOnce(
                    f"trial {n}: the killed sweeper's job (SLURM {a.get('slurm_job_id')}, pid "
                    f"{a['pid']}) ran until {a['end']}; the re-run's job (SLURM "
                    f"{b.get('slurm_job_id')}, pid {b['pid']}) started at {b['start']:.1f}")
