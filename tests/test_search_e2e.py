"""End-to-end searches: real Hydra launches of `python -m gpunet.search` on the tiny test space.

Every run is a real subprocess with the gpunet sweeper, a real latency table (ONNX Runtime,
built once for the session) and a real launcher (basic or joblib).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

pytestmark = pytest.mark.e2e  # the apps run in subprocesses (the e2e marker: pyproject.toml)

TESTS = Path(__file__).resolve().parent


def search_cmd(shared: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "gpunet.search", "search_space=tiny", "objective=ackley",
            f"hydra.searchpath=[file://{TESTS / 'conf'}]",
            f"latency.table={shared / 'tiny.sqlite'}", "latency.runs=5", "latency.warmup=2",
            f"search.pool.cache_dir={shared / 'pools'}", "search.pool.samples=4096",
            "tier.target_ms=500", "tier.tolerance_ms=499.99", f"hydra.sweep.dir={sweep_dir}",
            f"hub.dir={shared / 'hub'}",
            "search.n_trials=8",     # the tests' budget
            "hydra/launcher=basic",  # device=cpu's default is joblib; a test that wants it says so
            *overrides]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "WANDB_MODE": "disabled"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def journal(sweep_dir: Path) -> list[dict]:
    """The trial lines of a search's journal (the first line is the search's definition)."""
    lines = [json.loads(line) for line in (sweep_dir / "journal.jsonl").read_text().splitlines()]
    return [line for line in lines if "search" not in line]


def results(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def test_basic_launcher_search_writes_every_output(shared, tmp_path):
    sweep = tmp_path / "s"
    run(search_cmd(shared, sweep, "searcher=lamcts_bo", "searcher.n_init=4", "search.n_trials=8"),
        tmp_path)
    rows = results(sweep)
    assert [int(r["number"]) for r in rows] == list(range(8))
    assert all(r["status"] == "completed" for r in rows)
    assert len({r["encoding"] for r in rows}) == 8
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best["ackley_value"] == max(float(r["value"]) for r in rows)
    assert best["measured_latency_ms"] > 0 and best["params"] > 0 and best["macs"] > 0
    assert best["spec"]["resolution"] == 32 and len(best["encoding"]) == 41
    for name in ("convergence.png", "latency_vs_accuracy.png", "best.onnx"):
        assert (sweep / name).stat().st_size > 1000
    # every job ran in its own trial directory with its Hydra config
    assert (sweep / "trials" / "0007" / ".hydra" / "overrides.yaml").exists()


def test_joblib_launcher_runs_batches_of_two(shared, tmp_path):
    sweep = tmp_path / "s"
    out = run(search_cmd(shared, sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                         "searcher=random", "search.n_trials=8"), tmp_path)
    assert "batch size 2" in out.stdout + out.stderr
    lines = journal(sweep)
    running = [line["job"] for line in lines if line["status"] == "running"]
    assert sorted(running) == list(range(8))
    assert len([r for r in results(sweep) if r["status"] == "completed"]) == 8


def test_a_cpu_search_trains_in_parallel_processes_by_default(shared, tmp_path):
    sweep = tmp_path / "s"
    cmd = [arg for arg in search_cmd(shared, sweep, "searcher=random") if arg != "hydra/launcher=basic"]
    out = run(cmd, tmp_path)
    log = out.stdout + out.stderr
    workers = min(os.cpu_count() or 1, 2)  # joblib over every CPU, at most 8 trials / 4 at once
    assert "Joblib.Parallel(n_jobs=-1" in log
    launcher = OmegaConf.load(sweep / "trials" / "0000" / ".hydra" / "hydra.yaml").hydra.launcher
    assert launcher._target_.endswith("GPUNetJoblibLauncher")  # configs composed ahead
    assert f"batch size {workers}" in log
    if workers > 1:
        assert f"asynchronous: {workers} jobs in flight" in log
    assert len([r for r in results(sweep) if r["status"] == "completed"]) == 8


def test_kill_and_resume_loses_and_repeats_nothing(shared, tmp_path):
    sweep = tmp_path / "s"
    cmd = search_cmd(shared, sweep, "searcher=evolution", "search.n_trials=24")
    run(cmd[:-1] + ["search.n_trials=1"], tmp_path)  # the table and pool exist before timing
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        done = [j for j in journal(sweep) if j["status"] == "completed"] if (
            sweep / "journal.jsonl").exists() else []
        if len(done) >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {j["number"]: j for j in journal(sweep) if j["status"] == "completed"}
    assert 8 <= len(before) < 24, "the search was not killed mid-way"
    run(cmd, tmp_path)
    finished = [j for j in journal(sweep) if j["status"] == "completed"]
    numbers = [j["number"] for j in finished]
    assert sorted(numbers) == list(range(24))  # nothing lost, nothing run twice
    assert len({tuple(j["encoding"]) for j in finished}) == 24
    for j in finished:  # trials finished before the kill were not run again
        if j["number"] in before:
            assert j == before[j["number"]]
    jobs = [j["job"] for j in journal(sweep) if j["status"] == "running"]
    assert len(jobs) == len(set(jobs))  # job numbers continue, never reused


def test_a_search_leaves_the_pool_and_resumes_exactly(shared, tmp_path):
    """lamcts_bo proposes new encodings of the tier (journaled with pool_index null), and a search
    stopped and resumed proposes exactly what the same search run in one go did."""
    common = ("searcher=lamcts_bo", "searcher.n_init=4", "search.pool.samples=256",
              f"search.pool.cache_dir={tmp_path / 'pools'}")
    whole, split = tmp_path / "whole", tmp_path / "split"
    run(search_cmd(shared, whole, *common, "search.n_trials=12"), tmp_path)
    run(search_cmd(shared, split, *common, "search.n_trials=7"), tmp_path)
    run(search_cmd(shared, split, *common, "search.n_trials=12"), tmp_path)  # resumes at 7

    def trials(sweep: Path) -> list[tuple]:
        return [(j["number"], j["encoding"], j["pool_index"], j["proposer"], j["value"])
                for j in journal(sweep) if j["status"] == "completed"]

    assert trials(whole) == trials(split) and len(trials(whole)) == 12
    (pool_file,) = (tmp_path / "pools").glob("*.npz")
    pool = np.load(pool_file)["encodings"]
    beyond = [t for t in trials(whole) if t[2] is None]
    assert beyond and all(t[3] == "model" for t in beyond)
    for _, encoding, *_ in beyond:
        assert not (pool == np.asarray(encoding)).all(axis=1).any()
    for _, encoding, row, *_ in trials(whole):
        if row is not None:
            assert pool[row].tolist() == encoding
    rows = results(whole)
    assert sum(r["pool_index"] == "" for r in rows) == len(beyond)


def test_failing_jobs_are_recorded_and_never_proposed_again(shared, tmp_path):
    sweep = tmp_path / "s"
    run(search_cmd(shared, sweep, "objective=flaky", "searcher=random", "search.n_trials=12",
                   "search.max_failure_rate=1.0"), tmp_path)
    rows = results(sweep)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("injected failure" in r["error"] for r in failed)
    assert len({r["encoding"] for r in rows}) == len(rows) == 12


def test_too_many_failures_stop_with_a_clear_message(shared, tmp_path):
    sweep = tmp_path / "s"
    out = run(search_cmd(shared, sweep, "objective=flaky", "searcher=random",
                         "search.n_trials=40", "search.max_failure_rate=0.0",
                         "search.min_trials_before_failure_check=2"), tmp_path, check=False)
    assert out.returncode != 0
    assert "stopping the search" in out.stderr and "max_failure_rate=0.0" in out.stderr
    assert (sweep / "results.csv").exists()  # what ran is still written out


def test_empty_tier_reports_the_range_that_exists(shared, tmp_path):
    out = run(search_cmd(shared, tmp_path / "s", "tier.target_ms=5000", "tier.tolerance_ms=0.1"),
              tmp_path, check=False)
    assert out.returncode != 0 and "range" in out.stderr.lower() and "ms" in out.stderr


def test_misspelt_override_gives_hydras_error(shared, tmp_path):
    out = run(search_cmd(shared, tmp_path / "s", "searcher=lamcst_bo"), tmp_path, check=False)
    assert out.returncode != 0
    assert "Could not find 'searcher/lamcst_bo'" in out.stderr and "lamcts_bo" in out.stderr


def test_ablation_grid_runs_one_search_per_point_and_compares(shared, tmp_path):
    sweep = tmp_path / "s"
    run(search_cmd(shared, sweep, "searcher=random,evolution", "seed=0,1", "search.n_trials=4"),
        tmp_path)
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["trials"] for r in rows} == {"4"}
    for row in rows:  # the final check's choice beside the most accurate trial: best.yaml's
        best = yaml.safe_load((sweep / row["search"] / "best.yaml").read_text())
        assert int(row["chosen_trial"]) == best["trial"]
        assert float(row["chosen_latency_ms"]) == pytest.approx(best["measured_at_table_speed_ms"])
        assert row["chosen_within_tier"] == str(best["measured_at_table_speed_ms"] <= 500 + 499.99)
    assert (sweep / "comparison.png").exists()
    assert sorted(p.parent.name for p in sweep.glob("*/results.csv")) == [
        "searcher-evolution__seed-0", "searcher-evolution__seed-1", "searcher-random__seed-0",
        "searcher-random__seed-1"]


def test_real_training_search_on_digits_adds_to_the_hub(shared, tmp_path):
    sweep = tmp_path / "s"
    run(search_cmd(shared, sweep, "objective=train", "searcher=random", "search.n_trials=2",
                   "recipe.epochs=1", "trainer.enable_progress_bar=false"), tmp_path)
    rows = results(sweep)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best["val_top1"] == max(float(r["value"]) for r in rows)
    assert (sweep / "trials" / "0000" / "last.ckpt").exists()
    assert best["spec"]["head"]["num_classes"] == 10  # the trained head, not ImageNet's
    hub = {e["name"]: e for e in yaml.safe_load((shared / "hub" / "hub.yaml").read_text())}
    assert hub["gpunet_tiny_cpu_500ms_pm499p99_digits"]["top1"] == best["val_top1"]


def test_submitit_local_launcher(shared, tmp_path):
    """SLURM's code path without a cluster: submitit's local executor runs each job in its own
    process and pickles the result back."""
    sweep = tmp_path / "s"
    run(search_cmd(shared, sweep, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                   "searcher=random", "search.n_trials=2"), tmp_path)
    assert [r["status"] for r in results(sweep)] == ["completed", "completed"]
    assert any((sweep / ".submitit").iterdir())  # submitit's job folders


def test_wandb_summary_run_offline(shared, tmp_path):
    sweep = tmp_path / "s"
    cmd = search_cmd(shared, sweep, "logger=wandb", "searcher=random", "search.n_trials=3")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "WANDB_MODE": "offline"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
