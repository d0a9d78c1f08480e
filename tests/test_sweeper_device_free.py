"""The sweeper never needs the target device: a search or stratify for a GPU runs on a CPU-only
machine (a login node) from the table's stored facts, and measuring happens where the device is.

The GPU table here is made by hand: a table file with an H100 TensorRT context (the facts only a
machine with the GPU knows: its hardware name and library versions) and an entry for every key
of the CPU search space.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from test_latency_support import table_inputs

from gpunet.latency import end_to_end
from gpunet.latency.backends import BackendUnavailable
from gpunet.latency.build import LatencySetup, TableNotReady, ensure_table
from gpunet.latency.space_keys import reach
from gpunet.latency.stratify import stratify_app
from gpunet.latency.table import LatencyTable
from gpunet.latency.timing import Timing
from gpunet.models import spec_cost
from gpunet.paths import CONF_DIR
from gpunet.search.journal import Trial
from gpunet.search.outputs import OutputSettings, write_outputs
from gpunet.space import encoding_to_spec, load_space, sobol_encodings

TESTS = Path(__file__).resolve().parent
CPU_SPACE = load_space("cpu")
H100 = {"device": "h100", "hardware": "NVIDIA H100 80GB HBM3", "backend": "tensorrt",
        "precision": "fp16", "batch_size": 1,
        "settings": {"opset": 17, "workspace_gib": 4.0, "strongly_typed": False},
        "versions": {"torch": "2.5.1+cu124", "timm": "1.0.12", "tensorrt": "10.7.0", "cuda": "12.4"}}

no_gpu_here = pytest.mark.skipif(
    torch.cuda.is_available() or importlib.util.find_spec("tensorrt") is not None,
    reason="this machine could run TensorRT: the tests are about one that cannot")


def gpu_table(path: Path, context: dict = H100, drop: int = 0, seed: int = 0) -> LatencyTable:
    """Every key of the CPU space (10-class head) under `context`, minus the first `drop` keys."""
    table = LatencyTable(path, context)
    probes = reach(CPU_SPACE, 10).probes()[drop:]
    medians = np.random.default_rng(seed).uniform(0.005, 0.05, len(probes))
    table.put_many([(p.key, p.fields(), Timing(float(m), float(m) * 1.1, 50))
                    for p, m in zip(probes, medians)])
    return table


@pytest.mark.e2e
@no_gpu_here
def test_a_search_for_an_h100_runs_on_this_cpu_machine_from_the_stored_table(tmp_path):
    table = tmp_path / "h100.sqlite"
    gpu_table(table).close()
    sweep = tmp_path / "search"
    cmd = [sys.executable, "-m", "gpunet.search", "device=h100", "objective=ackley", "searcher=random",
           "search.n_trials=3", f"latency.table={table}", f"search.pool.cache_dir={tmp_path / 'pools'}",
           "search.pool.samples=4096", "tier.target_ms=500", "tier.tolerance_ms=499.99",
           f"hydra.sweep.dir={sweep}", f"hub.dir={tmp_path / 'hub'}"]
    env = {**os.environ, "PYTHONPATH": str(TESTS), "WANDB_MODE": "disabled"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert "using the table's stored context" in log and "NVIDIA H100 80GB HBM3" in log
    with open(sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    # measuring needs the GPU: a launcher job tried (and could not here either); the note says so
    assert best["measured_latency_ms"] is None and best["est_latency_ms"] > 0
    note = best["measured_latency_note"]
    assert "launcher job" in note and "re-run this search's command" in note and "device=h100" in note
    assert (sweep / "best_latency_top3" / ".hydra" / "overrides.yaml").exists()


@no_gpu_here
def test_stratify_for_an_h100_works_from_the_stored_table(tmp_path, capsys, compose_cfg):
    gpu_table(tmp_path / "table.sqlite").close()
    cfg = compose_cfg(tmp_path, "device=h100", "stratify.samples=4096")
    summary = stratify_app(cfg, tmp_path / "out")
    assert summary["context"] == H100 and summary["num_classes"] == 10
    assert summary["range_ms"][0] > 0 and (tmp_path / "out" / "latency_tiers.png").exists()
    assert "using the table's stored context" in capsys.readouterr().out


@no_gpu_here
def test_without_a_complete_stored_table_the_error_names_the_build_to_run_on_a_gpu_node(tmp_path,
                                                                                       compose_cfg):
    cfg = compose_cfg(tmp_path, "device=h100")
    command = (f"python -m gpunet.latency.build device=h100 latency=tensorrt search_space=cpu "
               f"data.num_classes=10 latency.table={tmp_path / 'table.sqlite'}")
    with pytest.raises(TableNotReady) as err:
        ensure_table(*table_inputs(cfg))
    message = str(err.value)
    assert "does not exist" in message and command in message and "gpunet[tensorrt]" in message
    assert not (tmp_path / "table.sqlite").exists()  # nothing was created
    gpu_table(tmp_path / "table.sqlite", drop=1).close()  # one entry short
    with pytest.raises(TableNotReady, match=r"miss entries \(1 of the 1,183 needed") as err:
        ensure_table(*table_inputs(cfg))
    assert command in str(err.value)
    # a context made with other settings (opset 13) does not stand for this config
    other = tmp_path / "other" / "table.sqlite"
    gpu_table(other, {**H100, "settings": {**H100["settings"], "opset": 13}}).close()
    with pytest.raises(TableNotReady, match="has no entries measured for device=h100"):
        ensure_table(*table_inputs(compose_cfg(other.parent, "device=h100")))
    setup, space = table_inputs(compose_cfg(other.parent, "device=h100", "latency.opset=13"))
    assert ensure_table(setup, space).context["settings"]["opset"] == 13


@no_gpu_here
def test_the_newest_complete_stored_context_is_taken(tmp_path, capsys, compose_cfg):
    path = tmp_path / "table.sqlite"
    gpu_table(path).close()
    newer = {**H100, "versions": {**H100["versions"], "tensorrt": "10.9.0"}}
    gpu_table(path, newer, seed=1).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE entries SET measured_at = '2024-01-01T00:00:00+00:00' WHERE context_id = "
                     "(SELECT id FROM contexts WHERE context LIKE '%10.7.0%')")
    conn.close()
    table = ensure_table(*table_inputs(compose_cfg(tmp_path, "device=h100")))
    assert table.context == newer and len(table) == 1183
    assert "the newest of 2 complete stored contexts" in capsys.readouterr().out


def search_cfg(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("search", overrides=list(overrides))


class JobLauncher:
    """Runs each job's config through the search's job function, as a launcher on a node with
    the device would; records the overrides."""

    def __init__(self, base: list[str]) -> None:
        self.base, self.launched, self.in_job = base, [], False

    def launch(self, job_overrides, initial_job_idx):
        from gpunet.search.job import run_trial

        returns = []
        for overrides in job_overrides:
            self.launched.append(list(overrides))
            cfg = search_cfg(*[o for o in overrides if not o.startswith("hydra.")])
            self.in_job = True
            try:
                value = run_trial(cfg)
            finally:
                self.in_job = False
            returns.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                                     _return_value=value))
        return returns


def test_the_best_networks_latency_is_measured_by_a_launcher_job_when_the_sweeper_cannot(
        tmp_path, monkeypatch):
    base = ["latency.runs=3", "latency.warmup=1", f"latency.table={tmp_path / 'not-here.sqlite'}"]
    launcher = JobLauncher(base)
    real = end_to_end.measure_end_to_end

    def only_in_jobs(specs, setup, rounds):
        if not launcher.in_job:
            raise BackendUnavailable("no such device in the sweeper's process")
        return real(specs, setup, rounds)

    monkeypatch.setattr(end_to_end, "measure_end_to_end", only_in_jobs)
    cfg = search_cfg("objective=ackley", "search.final_check.rounds=2", *base)  # no table anywhere
    x, y = (e.tolist() for e in sobol_encodings(CPU_SPACE, 2, seed=0))
    trials = [Trial(0, 0, x, 1.0, status="completed", value=-2.0),
              Trial(1, 5, y, 1.1, status="completed", value=-3.0)]
    best = write_outputs(tmp_path, trials, OutputSettings.from_config(cfg), launcher, base)
    [job] = launcher.launched  # one job times both contenders, the most accurate first
    assert job[:3] == base and "++trial.kind=latency" in job and "hydra.sweep.subdir=best_latency_top2" in job
    assert f"++trial.encodings=[[{','.join(map(str, x))}],[{','.join(map(str, y))}]]" in job
    assert "++trial.rounds=2" in job and "++trial.num_classes=10" in job
    stored = yaml.safe_load((tmp_path / "best.yaml").read_text())
    measured = stored["final_check"]["measured"]
    assert [m["trial"] for m in measured] == [0, 1] and all(m["measured_latency_ms"] > 0 for m in measured)
    # the job found no table: no speed against it, so the figures stand as measured
    assert stored["final_check"]["speed"] is None and measured[0]["at_table_speed_ms"] == measured[0][
        "measured_latency_ms"]
    assert stored["measured_latency_ms"] == best["measured_latency_ms"] > 0
    assert stored["measured_on"]["where"] == "launcher job" and stored["spec"]["head"]["num_classes"] == 10
    assert "measured_latency_note" not in stored


def test_a_widened_final_check_is_a_second_launcher_job_with_its_own_number_and_folder(
        tmp_path, monkeypatch):
    """None of the top 1 measures within the tier: the top 2 are timed by one more job."""
    base = ["latency.runs=3", "latency.warmup=1", f"latency.table={tmp_path / 'not-here.sqlite'}"]
    launcher = JobLauncher(base)
    real, numbers = end_to_end.measure_end_to_end, []

    def only_in_jobs(specs, setup, rounds):
        if not launcher.in_job:
            raise BackendUnavailable("no such device in the sweeper's process")
        return real(specs, setup, rounds)

    def numbered(job_overrides, initial_job_idx):
        numbers.append(initial_job_idx)
        return JobLauncher.launch(launcher, job_overrides, initial_job_idx)

    monkeypatch.setattr(end_to_end, "measure_end_to_end", only_in_jobs)
    monkeypatch.setattr(launcher, "launch", numbered)
    cfg = search_cfg("objective=ackley", "search.final_check.rounds=2", "search.final_check.top=1",
                     "search.final_check.widen=2", *base)
    # the heaviest and the lightest of 32 Sobol networks, several-fold apart end to end: an edge
    # at the geometric mean of their latencies separates them on any machine
    encodings = [x.tolist() for x in sobol_encodings(CPU_SPACE, 32, seed=0)]
    macs = [spec_cost(encoding_to_spec(CPU_SPACE, x, num_classes=10)).macs for x in encodings]
    heavy, light = encodings[macs.index(max(macs))], encodings[macs.index(min(macs))]
    specs = [encoding_to_spec(CPU_SPACE, x, num_classes=10) for x in (heavy, light)]
    ms = real(specs, LatencySetup.from_config(cfg), 2).ms
    assert ms[0] > 2 * ms[1], ms
    trials = [Trial(0, 0, heavy, 1.0, status="completed", value=-2.0),
              Trial(1, 3, light, 1.1, status="completed", value=-3.0)]
    settings = dataclasses.replace(OutputSettings.from_config(cfg), band=(0.0, (ms[0] * ms[1]) ** 0.5))
    best = write_outputs(tmp_path, trials, settings, launcher, base)
    first, widened = launcher.launched
    assert "hydra.sweep.subdir=best_latency_top1" in first
    assert "hydra.sweep.subdir=best_latency_top2" in widened
    assert numbers == [4, 5]  # after the trials' jobs (the last was job 3), one number each
    assert f"++trial.encodings=[[{','.join(map(str, heavy))}]]" in first
    stored = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["trial"] == 1 and stored["final_check"]["widened_from"] == 1
    assert [m["trial"] for m in stored["final_check"]["measured"]] == [0, 1]
    assert stored["measured_on"]["where"] == "launcher job"
