"""A search on a real (local) Ray cluster through `hydra/launcher=gpunet_ray`.

The fixture starts a head node on this machine (`ray start --head --num-cpus=2`, in its own
process group, token authentication with a token of its own) and stops exactly that group
afterwards. Without Ray installed (`pip install -e ".[cluster]"`) the test skips and says so. The
jobs run `recording_objective` from test_cluster_slurm.py, which records each run's start and
end in its trial directory: concurrency is proven from what the jobs recorded.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_cluster_slurm import (
    assert_batches_overlapped,
    job_env,
    prepare,
    results,
    run,
    runs,
    search_cmd,
    trial_lines,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


@pytest.fixture
def short_tmp():
    """A short folder for Ray's sessions: its socket paths must stay under 108 bytes."""
    folder = tempfile.mkdtemp(prefix="gpunet-ray-", dir="/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(pgid: int) -> None:
    """Stop the processes `ray start` left in its own process group (and only those)."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            return
        os.killpg(pgid, sig)
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """A one-node Ray cluster with 2 CPUs; yields its address and the environment to join it."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[cluster]'")
    exe = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    tmp = tmp_path_factory.mktemp("ray")
    sessions = Path(tempfile.mkdtemp(prefix="gpunet-ray-", dir="/tmp"))  # short socket paths
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    env = job_env()  # the workers inherit it: PYTHONPATH finds the test objective
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    cmd = [exe, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
           "--num-gpus=0", f"--temp-dir={sessions}", "--include-dashboard=false",
           "--disable-usage-stats", f"--dashboard-agent-listen-port={_free_port()}"]
    start = time.monotonic()
    with open(tmp / "start.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its daemons keep this process group
    try:
        rc = proc.wait(timeout=180)
        assert rc == 0, f"ray start failed ({rc}):\n{(tmp / 'start.log').read_text()[-3000:]}"
        print(f"ray start: {time.monotonic() - start:.1f} s")
        yield f"127.0.0.1:{port}", env
    finally:
        _stop_group(proc.pid)
        shutil.rmtree(sessions, ignore_errors=True)


def test_ray_search_runs_two_jobs_at_once_with_hydras_job_semantics(ray_cluster, shared, tmp_path):
    address, env = ray_cluster
    sweep = prepare(tmp_path / "s", barrier="2", crash="2", fail="3")
    start = time.monotonic()
    run(search_cmd(shared, sweep, "hydra/launcher=gpunet_ray",
                   f"hydra.launcher.ray.init.address={address}", "hydra.launcher.ray.remote.num_cpus=1",
                   "+hydra.launcher.ray.remote.max_retries=0", "search.n_trials=4"), tmp_path, env)
    print(f"Ray search of 4 trials: {time.monotonic() - start:.1f} s")
    recorded = assert_batches_overlapped(sweep, [[0, 1]])  # 2 workers at once
    assert len({r["pid"] for r in recorded if r["trial"] in (0, 1)}) == 2
    rows = {int(r["number"]): r for r in results(sweep)}
    assert [rows[n]["status"] for n in range(4)] == ["completed", "completed", "failed", "failed"]
    assert "WorkerCrashedError" in rows[2]["error"] or "died" in rows[2]["error"], rows[2]["error"]
    run_3 = next(r for r in runs(sweep) if r["trial"] == 3)
    assert rows[3]["error"].startswith("RuntimeError: injected failure on ")
    assert f"pid {run_3['pid']}" in rows[3]["error"]  # the worker's own error
    assert sorted(t["job"] for t in trial_lines(sweep) if t["status"] == "running") == [0, 1, 2, 3]
    jobs = {t["number"]: t["job"] for t in trial_lines(sweep)}
    by_trial = {r["trial"]: r for r in runs(sweep)}
    for n in range(4):  # run as Hydra runs a job: its directory, its .hydra files, its number
        trial_dir = sweep / "trials" / f"{n:04d}"
        hydra_cfg = yaml.safe_load((trial_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["job"]["num"] == jobs[n]
        assert hydra_cfg["job"]["id"] == by_trial[n]["ray_task"]  # the Ray task that ran it
        assert f"trial.number={n}" in (trial_dir / ".hydra" / "overrides.yaml").read_text()
        assert (trial_dir / ".hydra" / "config.yaml").is_file()
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best["encoding"] == [int(x) for x in rows[max((0, 1), key=lambda n: float(
        rows[n]["value"]))]["encoding"].split("-")]


@pytest.mark.slow
def test_ray_local_instance_started_by_the_launcher_outlives_its_jobs(shared, tmp_path, short_tmp):
    """`address=local`: the launcher starts Ray inside the sweeper. It must do so in the main
    thread: an asynchronous search launches each job from a thread of its own, and a Ray
    instance started there is killed when that thread ends (after the first job). (Slow: 40 s
    to 2 minutes, not in CI's budget.)"""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[cluster]'")
    sweep = prepare(tmp_path / "s", barrier="2")
    env = job_env()
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(short_tmp))
    run(search_cmd(shared, sweep, "hydra/launcher=gpunet_ray", "hydra.launcher.ray.init.address=local",
                   "hydra.launcher.ray.init.num_cpus=2", "search.n_trials=3"), tmp_path, env)
    assert [r["status"] for r in results(sweep)] == ["completed"] * 3
    assert_batches_overlapped(sweep, [[0, 1]])
