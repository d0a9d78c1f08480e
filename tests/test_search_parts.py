"""Search building blocks that need no launcher: the journal, the override grid, the hub."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from hydra.errors import HydraException

from gpunet.hub.entries import SearchOrigin, add_search_result, entry_name, load_hub, query
from gpunet.search.grid import grid_points
from gpunet.search.journal import Journal, Trial
from gpunet.space import encoding_to_spec


def test_journal_last_state_wins_and_a_torn_line_is_skipped(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append(Trial(0, 0, [1, 2], 0.9))
    journal.append(Trial(1, 1, [2, 2], 1.0))
    journal.append(Trial(1, 1, [2, 2], 1.0, status="completed", value=0.5, curve=[0.3, 0.5]))
    journal.append(Trial(0, 0, [1, 2], 0.9, status="failed", error="boom"))
    with open(journal.path, "a") as f:
        f.write('{"number": 2, "job": 2, "enc')  # killed mid-write
    trials = journal.load()
    assert list(trials) == [0, 1]
    assert trials[0].status == "failed" and math.isnan(trials[0].observed_value)
    assert trials[1].curve == [0.3, 0.5] and trials[1].observed_value == 0.5
    # observation history = order of finishing, not of numbering
    assert [t.number for t in journal.finished_in_order()] == [1, 0]


def test_journal_keeps_completed_curves_and_skips_partial_lines(tmp_path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    assert journal.completed_curves() == []
    states = [(0, "running", []), (0, "completed", [0.1, 0.2]), (1, "pruned", [0.0]), (2, "failed", []),
              (3, "completed", [0.3]), (3, "running", []), (4, "completed", [0.5]),
              (4, "completed", [0.6])]
    for number, status, curve in states:
        journal.append(Trial(number, number, [0], 1.0, status=status, curve=curve))
    with open(journal.path, "a") as f:
        f.write('{"number": 5, "status": "compl')  # a line being written
    assert journal.completed_curves() == [[0.1, 0.2], [0.6]]


def test_grid_points_cross_product_of_comma_lists():
    points = grid_points(["searcher=lamcts_bo,random", "seed=0,1,2", "search.n_trials=5"])
    assert len(points) == 6
    assert points[0].overrides == ("search.n_trials=5", "searcher=lamcts_bo", "seed=0")
    assert points[-1].varying == ("searcher=random", "seed=2")
    assert len({p.label for p in points}) == 6 and all("/" not in p.label for p in points)
    assert [p.varying for p in grid_points(["tier=1ms"])] == [()]


def test_grid_takes_ranges_and_refuses_intervals():
    assert [p.varying for p in grid_points(["seed=range(0,3)"])] == [("seed=0",), ("seed=1",),
                                                                     ("seed=2",)]
    with pytest.raises(HydraException, match="discrete choices"):
        grid_points(["search.lr=interval(0,1)"])


def test_released_gpunets_are_in_the_hub_and_queryable():
    names = {e.name for e in load_hub()}
    assert {"gpunet_0", "gpunet_1", "gpunet_2"} <= names
    within = query(load_hub(), device="a100", budget_ms=0.6)
    assert [e.name for e in within] == ["gpunet_1", "gpunet_p0", "gpunet_0"]
    assert all(e.latency_ms["a100"] <= 0.6 for e in within)


@pytest.mark.e2e  # runs `python -m gpunet.hub`
def test_search_results_enter_the_hub_and_timm(tmp_path, table1):
    spec = encoding_to_spec(table1, [0] * 41, num_classes=10)
    origin = SearchOrigin(search_space="gpunet", device="cpu", tier="1ms", dataset="digits",
                          backend="onnxruntime")
    best = {"val_top1": 0.5, "resolution": spec.resolution, "measured_latency_ms": 1.1,
            "est_latency_ms": 1.0, "params": 1, "macs": 2, "encoding": [0] * 41,
            "spec": spec.to_dict()}
    added = add_search_result(best, origin, tmp_path)
    entry = added.entry
    assert entry.name == entry_name("gpunet", "cpu", "1ms", "digits") == "gpunet_gpunet_cpu_1ms_digits"
    assert added.action == "added" and str(added) == (
        f"added: gpunet_gpunet_cpu_1ms_digits (top-1 0.5000) is new in {tmp_path / 'hub.yaml'}")
    # a worse result for the same (space, device, tier, dataset) does not replace it; a better one does
    kept = add_search_result({**best, "val_top1": 0.4}, origin, tmp_path)
    assert kept.action == "kept" and kept.entry.top1 == 0.5
    assert str(kept) == "kept: the hub's gpunet_gpunet_cpu_1ms_digits has top-1 0.5000 >= 0.4000"
    replaced = add_search_result({**best, "val_top1": 0.6}, origin, tmp_path)
    assert replaced.action == "replaced" and replaced.entry.top1 == 0.6
    assert str(replaced) == "replaced: gpunet_gpunet_cpu_1ms_digits: top-1 0.6000 > the previous 0.5000"
    assert [e.top1 for e in load_hub(tmp_path) if e.source == "search"] == [0.6]
    model = timm.create_model("gpunet_gpunet_cpu_1ms_digits")
    assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 224, 224)
    searched = [e for e in load_hub(tmp_path) if e.source == "search"]
    assert [e.name for e in searched] == ["gpunet_gpunet_cpu_1ms_digits"]
    out = subprocess.run([sys.executable, "-m", "gpunet.hub", "--dir", str(tmp_path), "--device",
                          "cpu", "--budget", "2"], capture_output=True, text=True, check=True)
    assert "gpunet_gpunet_cpu_1ms_digits" in out.stdout and "gpunet_0" not in out.stdout
    assert json.loads((tmp_path / "gpunet_gpunet_cpu_1ms_digits.json").read_text())["resolution"] == 224


def test_an_unmeasured_best_enters_the_hub_with_its_estimate(tmp_path, table1):
    spec = encoding_to_spec(table1, [0] * 41, num_classes=10)
    origin = SearchOrigin(search_space="gpunet", device="h100", tier="1ms", dataset="digits",
                          backend="tensorrt")
    best = {"val_top1": 0.5, "resolution": spec.resolution, "measured_latency_ms": None,
            "est_latency_ms": 0.97, "params": 1, "macs": 2, "encoding": [0] * 41,
            "spec": spec.to_dict()}
    entry = add_search_result(best, origin, tmp_path).entry
    assert entry.latency_ms == {"h100": 0.97} and entry.details["latency_source"] == "estimate"


def test_a_measured_best_enters_the_hub_at_the_tables_speed(tmp_path, table1):
    """The final check chose the best by its latency at the table's speed; the hub lists that
    figure (a slow moment of the machine would put a 1 ms network at 1.3 ms), the raw one beside."""
    spec = encoding_to_spec(table1, [0] * 41, num_classes=10)
    origin = SearchOrigin(search_space="gpunet", device="cpu", tier="1ms", dataset="digits",
                          backend="onnxruntime")
    best = {"val_top1": 0.5, "resolution": spec.resolution, "measured_latency_ms": 1.3,
            "measured_at_table_speed_ms": 1.04, "est_latency_ms": 0.97, "params": 1, "macs": 2,
            "encoding": [0] * 41, "spec": spec.to_dict()}
    entry = add_search_result(best, origin, tmp_path).entry
    assert entry.latency_ms == {"cpu": 1.04}
    assert entry.details["latency_source"] == "measured" and entry.details["measured_latency_ms"] == 1.3


def test_a_tiers_entry_within_the_tier_wins_over_a_more_accurate_one_above_it(tmp_path, table1):
    """A search whose best measured above its tier's edge (none of its final check's networks
    fitted) still enters an empty hub, saying so; the same network measured within the tier by
    another search replaces it at equal top-1, and a more accurate one above the edge does not."""
    spec = encoding_to_spec(table1, [0] * 41, num_classes=10)
    origin = SearchOrigin("gpunet", "cpu", "1ms", "digits", "onnxruntime", "proxy-aaa")

    def best(top1: float, ms: float) -> dict:
        return {"val_top1": top1, "resolution": spec.resolution, "measured_latency_ms": ms,
                "measured_at_table_speed_ms": ms, "est_latency_ms": 1.099, "params": 1, "macs": 2,
                "encoding": [0] * 41, "spec": spec.to_dict(), "final_check": {"tier_edge_ms": 1.1}}

    added = add_search_result(best(0.9, 1.114), origin, tmp_path)
    assert added.action == "added"
    assert "it measured outside its tier (1.114 ms, above the tier's 1.100 ms edge)" in added.reason
    replaced = add_search_result(best(0.9, 1.056), origin, tmp_path)
    assert replaced.action == "replaced" and replaced.entry.latency_ms == {"cpu": 1.056}
    assert "this one measured within the tier (1.056 ms, within the tier's 1.100 ms)" in replaced.reason
    kept = add_search_result(best(0.95, 1.2), origin, tmp_path)
    assert kept.action == "kept" and kept.entry.top1 == 0.9
    assert "did not (1.200 ms, above the tier's 1.100 ms)" in kept.reason
    better = add_search_result(best(0.96, 1.09), origin, tmp_path)
    assert better.action == "replaced" and "top-1 0.9600 > the previous 0.9000" in better.reason
    [entry] = [e for e in load_hub(tmp_path) if e.source == "search"]
    assert entry.top1 == 0.96 and entry.details["tier_edge_ms"] == 1.1
    # `python -m gpunet.hub` marks a latency above the tier
    from gpunet.hub.__main__ import format_table

    assert format_table([entry], "cpu").endswith("cpu=1.09")
    above = add_search_result(best(0.9, 1.3), SearchOrigin("gpunet", "cpu", "0.5ms", "digits",
                                                           "onnxruntime"), tmp_path).entry
    listed = format_table([entry, above], "cpu").splitlines()
    assert listed[2].endswith("cpu=1.09") and listed[3].endswith("cpu=1.3!")
    assert listed[4].startswith("!: measured above its tier's upper edge")


@pytest.mark.e2e  # runs `python -m gpunet.hub`
def test_hub_cli_needs_a_device_for_a_budget():
    out = subprocess.run([sys.executable, "-m", "gpunet.hub", "--budget", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--budget needs --device" in out.stderr


@pytest.mark.e2e  # runs `python -m gpunet.hub`
@pytest.mark.parametrize("text", ["entries: [unclosed\n", "- 3\n"], ids=["not yaml", "not entries"])
def test_hub_cli_names_a_broken_hub_table_in_one_line(tmp_path, text):
    (tmp_path / "hub.yaml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "gpunet.hub", "--dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"error: the hub table {tmp_path / 'hub.yaml'} is not a list of hub entries")


def test_sweeper_plugin_is_discovered():
    code = ("from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper;"
            "print([c.__name__ for c in Plugins.instance().discover(Sweeper)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/")
    assert "GPUNetSweeper" in out.stdout


def compose_search(*overrides: str):
    from hydra import compose, initialize_config_dir

    from gpunet.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("search", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(("overrides", "batch"), [
    # submitit_slurm runs 256 array tasks at once: capped so the model picks most trials
    (["hydra/launcher=submitit_slurm", "search.n_trials=200"], 7),  # n_init: auto at 200 trials
    (["hydra/launcher=submitit_slurm", "search.n_trials=200", "searcher.n_init=20"], 20),
    (["hydra/launcher=submitit_slurm", "search.n_trials=40", "searcher.n_init=20"],
     10),  # a quarter of the trials
    (["hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=4", "search.n_trials=8"],
     2),  # 8 trials / 4
    (["hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=4",
      "search.n_trials=100"], 4),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=3", "search.n_trials=100",
      "searcher=random"], 3),
    (["hydra/launcher=basic", "search.n_trials=100"], 1),  # the basic launcher: one job at a time
    (["device=h100", "search.n_trials=100"], 1),  # a GPU device's default launcher is basic
    # device=cpu's default launcher is joblib over every CPU, capped by lamcts_bo's random start
    ([], min(os.cpu_count() or 1, 4)),  # 24 trials: n_init auto is 4
    (["hydra/launcher=submitit_slurm", "search.batch_size=64"], 64),  # the user's choice wins
    # Ray: the cluster's CPUs (or GPUs, when jobs take GPUs) over each job's
    # (searcher=random: no random start caps these; lamcts_bo's auto n_init at 100 trials is 5)
    (["hydra/launcher=gpunet_ray", "hydra.launcher.ray.init.num_cpus=6", "search.n_trials=100",
      "searcher=random"], 6),
    (["hydra/launcher=gpunet_ray", "hydra.launcher.ray.init.num_cpus=6",
      "hydra.launcher.ray.remote.num_cpus=2", "search.n_trials=100"], 3),
    (["hydra/launcher=gpunet_ray", "hydra.launcher.ray.init.num_gpus=8",
      "hydra.launcher.ray.remote.num_gpus=1", "search.n_trials=100", "searcher=random"], 8),
    (["hydra/launcher=gpunet_ray", "hydra.launcher.ray.init.num_gpus=8",
      "hydra.launcher.ray.remote.num_gpus=1", "search.n_trials=100"], 5),
    (["hydra/launcher=gpunet_ray", "hydra.launcher.ray.init.num_gpus=8",
      "hydra.launcher.ray.remote.num_gpus=1", "search.n_trials=8"], 2),  # 8 trials / 4
])
def test_batch_size_rule(overrides, batch):
    from gpunet.search.sweeper import choose_batch_size

    assert choose_batch_size(compose_search(*overrides))[0] == batch


@pytest.mark.parametrize(("overrides", "queues"), [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "search.n_trials=100"], True),
    (["hydra/launcher=gpunet_joblib", "hydra.launcher.n_jobs=4", "search.n_trials=100"], True),
    # the batch (capped at 8 trials / 4 = 2) leaves 2 of the 4 workers free: an extra job would run
    (["hydra/launcher=gpunet_joblib", "hydra.launcher.n_jobs=4", "search.n_trials=8"], False),
    # submitit starts every job it is given: an extra one would run beyond the batch
    (["hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=4",
      "search.n_trials=100"], False),
])
def test_only_a_full_joblib_pool_gets_a_job_queued_ahead(overrides, queues):
    from hydra.utils import instantiate

    from gpunet.search.sweeper import choose_batch_size, queues_ahead

    cfg = compose_search("searcher=random", *overrides)
    launcher = instantiate(cfg.hydra.launcher)
    assert queues_ahead(cfg, launcher, choose_batch_size(cfg)[0]) is queues


def _hold_trial_lock(directory: str, started, release) -> None:
    from gpunet.search.job import one_job_per_trial

    with one_job_per_trial(Path(directory), 7):
        started.set()
        release.wait(60)


def test_a_second_job_of_a_trial_waits_for_the_first(tmp_path, caplog):
    import multiprocessing as mp
    import threading

    from gpunet.search.job import one_job_per_trial

    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_trial_lock, args=(str(tmp_path), started, release))
    holder.start()
    assert started.wait(60)
    threading.Timer(1.0, release.set).start()
    with caplog.at_level("WARNING"), one_job_per_trial(tmp_path, 7):
        assert release.is_set()  # the lock came only after the first job let it go
    holder.join(30)
    assert "another job of this trial still runs" in caplog.text and f"pid {holder.pid}" in caplog.text


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    import matplotlib.pyplot as plt

    from gpunet.files import save_figure, write_json

    umask = os.umask(0o022)
    try:
        written = [write_json(tmp_path / "r.json", {"a": 1}), save_figure(plt.figure(), tmp_path / "f.png")]
    finally:
        os.umask(umask)
    assert [oct(p.stat().st_mode & 0o777) for p in written] == ["0o644", "0o644"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "r.json"]  # no temp files left


def test_a_search_of_another_recipe_replaces_the_hub_entry_and_says_why(tmp_path, table1):
    """Top-1s of two recipes are not comparable: a 3-epoch proxy's 0.94 is not better than a
    longer recipe's 0.90, nor is a lower figure under another recipe worse."""
    spec = encoding_to_spec(table1, [0] * 41, num_classes=10)
    best = {"val_top1": 0.9, "resolution": spec.resolution, "measured_latency_ms": 1.0,
            "est_latency_ms": 1.0, "params": 1, "macs": 2, "encoding": [0] * 41, "spec": spec.to_dict()}

    def origin(recipe: str | None) -> SearchOrigin:
        return SearchOrigin("gpunet", "cpu", "1ms", "digits", "onnxruntime", recipe)

    add_search_result(best, origin(None), tmp_path)  # an entry from before recipes were recorded
    update = add_search_result(best, origin("proxy-aaa"), tmp_path)
    assert update.action == "replaced" and "with an unrecorded recipe" in update.reason
    assert add_search_result({**best, "val_top1": 0.8}, origin("proxy-aaa"), tmp_path).action == "kept"
    update = add_search_result({**best, "val_top1": 0.8}, origin("proxy-bbb"), tmp_path)
    assert update.action == "replaced" and update.entry.top1 == 0.8
    assert "with recipe proxy-aaa" in update.reason and "with recipe proxy-bbb" in update.reason
    [entry] = [e for e in load_hub(tmp_path) if e.source == "search"]
    assert entry.details["recipe"] == "proxy-bbb" and entry.top1 == 0.8
