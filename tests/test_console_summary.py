"""What a search tells the user at its end (issue 14 item 3, and the small things of item 6):
the summary of a finished search, the one line after Ctrl-C, a resumed trial's whole duration,
and --help. Every run is a real `python -m gpunet.search` subprocess on the tiny test space."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_search_e2e import TESTS, journal, run, search_cmd

ENV = {**os.environ, "PYTHONPATH": str(TESTS), "WANDB_MODE": "disabled"}


def console(out: subprocess.CompletedProcess) -> str:
    return out.stdout + out.stderr


def summary_of(text: str, sweep: Path) -> list[str]:
    """The summary block of the search in `sweep`: its first line and the indented ones."""
    lines = text.splitlines()
    start = lines.index(f"search finished: {sweep}")
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def field(block: list[str], name: str) -> str:
    [line] = [line for line in block if line.startswith(f"  {name}: ")]
    return line.removeprefix(f"  {name}: ")


def assert_best_fields(block: list[str], sweep: Path, metric: str) -> dict:
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert field(block, "best") == f"trial {best['trial']}, {metric} = {best[metric]!r}"  # full precision
    raw, at_speed = best["measured_latency_ms"], best["measured_at_table_speed_ms"]
    assert field(block, "latency") == (f"estimated {best['est_latency_ms']:.4f} ms, measured "
                                       f"{raw:.4f} ms (onnxruntime on cpu)"
                                       + ("" if at_speed == raw else
                                          f", {at_speed:.4f} ms at the table's speed"))
    assert field(block, "params") == f"{best['params']:,} (MACs {best['macs']:,})"
    assert field(block, "best.yaml") == f"{sweep / 'best.yaml'} (network: best.onnx)"
    assert field(block, "results.csv") == str(sweep / "results.csv")
    assert field(block, "plots") == f"{sweep / 'convergence.png'}, {sweep / 'latency_vs_accuracy.png'}"
    for name in ("best.yaml", "results.csv", "convergence.png", "latency_vs_accuracy.png"):
        assert (sweep / name).is_file()
    return best


@pytest.mark.e2e
def test_a_search_ends_with_its_summary_and_says_so_again_on_resume(shared, tmp_path):
    sweep = tmp_path / "s"
    cmd = search_cmd(shared, sweep, "searcher=random", "search.n_trials=4")
    text = console(run(cmd, tmp_path))
    assert f"search in {sweep}: batch size 1" in text and "search search" not in text
    block = summary_of(text, sweep)
    assert field(block, "trials") == "4 of 4 finished: 4 completed, 0 pruned, 0 failed"
    assert_best_fields(block, sweep, "ackley_value")
    assert field(block, "hub") == "not added: objective=ackley (only objective=train adds to the hub)"
    assert (sweep / "summary.txt").read_text() == "\n".join(block) + "\n"  # and it is kept
    assert (sweep / "best.onnx").stat().st_mode & 0o777 == (sweep / "best.yaml").stat().st_mode & 0o777
    again = console(run(cmd, tmp_path))  # resumes: nothing to run, the table is complete
    assert "search space 'tiny': the latency table is complete (27 entries in " in again
    assert "measuring 0" not in again
    block = summary_of(again, sweep)  # the same, but the best's latency is measured again
    assert field(block, "trials") == "4 of 4 finished: 4 completed, 0 pruned, 0 failed"
    assert_best_fields(block, sweep, "ackley_value")


@pytest.mark.e2e
def test_a_grid_prints_one_summary_per_search_then_its_comparison(shared, tmp_path):
    sweep = tmp_path / "g"
    out = run(search_cmd(shared, sweep, "searcher=random,evolution", "search.n_trials=2"), tmp_path)
    text = out.stdout  # the summaries and the comparison are printed there, in order
    points = [sweep / "searcher-random", sweep / "searcher-evolution"]
    for point in points:
        assert f"search {point.name} in {point}:" in console(out)  # a grid's points say which
        assert field(summary_of(text, point), "trials") == "2 of 2 finished: 2 completed, 0 pruned, 0 failed"
    order = [text.index(f"search finished: {p}") for p in points]
    comparison = (f"grid of 2 searches compared: {sweep / 'comparison.csv'}, "
                  f"{sweep / 'comparison.png'}")
    assert order == sorted(order) and text.rstrip().endswith(comparison)


def launch(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """A search in its own process group, as a terminal runs it: Ctrl-C reaches the group."""
    return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for(proc: subprocess.Popen, condition, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the search ended (exit {proc.returncode}) before {what}:\n"
                                 + "".join(proc.communicate())[-3000:])
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def latest(sweep: Path) -> dict[int, dict]:
    return {line["number"]: line for line in journal(sweep)} if (sweep / "journal.jsonl").exists() else {}


def completed(sweep: Path) -> int:
    return sum(t["status"] == "completed" for t in latest(sweep).values())


def ctrl_c(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out + err)[-3000:]
    text = out + err
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    return text


def assert_one_resume_line(text: str, sweep: Path) -> None:
    lines = [line for line in text.splitlines() if "interrupted" in line]
    state = latest(sweep).values()
    finished = sum(t["status"] in ("completed", "pruned", "failed") for t in state)
    running = sum(t["status"] == "running" for t in state)
    assert lines == [f"interrupted: {finished} trials finished, {running} in flight; re-run the same "
                     f"command to resume (journal: {sweep / 'journal.jsonl'})"], lines


@pytest.mark.e2e
def test_ctrl_c_of_a_synchronous_search_prints_how_to_resume(shared, tmp_path):
    sweep = tmp_path / "s"
    proc = launch(search_cmd(shared, sweep, "objective=timed", "searcher=random", "search.n_trials=40"),
                  tmp_path)
    wait_for(proc, lambda: completed(sweep) >= 2, "2 trials completed")
    text = ctrl_c(proc)
    assert_one_resume_line(text, sweep)
    assert "search finished" not in text and 2 <= completed(sweep) < 40


@pytest.mark.e2e
def test_a_ctrl_c_that_a_job_turned_into_an_error_still_stops_the_search(shared, tmp_path):
    """SIGINT can land in library code that re-raises it as an ordinary error (Hydra's config
    composition of a job does): the trial is not recorded failed, the search stops with 130."""
    sweep = tmp_path / "s"
    out = run(search_cmd(shared, sweep, "objective=timed", "searcher=random", "search.n_trials=40",
                         "objective._target_=search_helpers.ctrl_c_swallowing_objective"),
              tmp_path, check=False)
    assert out.returncode == 130, (out.stdout + out.stderr)[-3000:]
    assert_one_resume_line(out.stderr, sweep)
    state = latest(sweep)
    assert not any(t["status"] == "failed" for t in state.values())
    assert sum(t["status"] == "running" for t in state.values()) == 1  # resumes on the next run


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def kill(proc: subprocess.Popen) -> str:
    """`kill PID` (SIGTERM to the search's process alone, as `timeout`, a container stop or a
    cluster's preemption send it): the same resume line as Ctrl-C, exit 143 (128 + SIGTERM)."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out + err)[-3000:]
    assert "Traceback" not in out + err, (out + err)[-3000:]
    return out + err


@pytest.mark.e2e
@pytest.mark.parametrize("stop", [ctrl_c, kill], ids=["ctrl_c", "kill"])
def test_stopping_an_asynchronous_search_stops_its_workers(shared, tmp_path, stop):
    sweep = tmp_path / "s"
    proc = launch(search_cmd(shared, sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             "objective=timed", "searcher=random", "search.n_trials=40"), tmp_path)
    wait_for(proc, lambda: completed(sweep) >= 2 and any(
        t["status"] == "running" for t in latest(sweep).values()), "2 trials completed, 1 running")
    workers = children_of(proc.pid)
    assert workers
    text = stop(proc)
    assert_one_resume_line(text, sweep)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert not alive, "the sweeper's workers outlived it"


@pytest.mark.e2e
def test_ctrl_c_mid_training_then_resume_counts_both_parts_and_the_summary_names_the_hub(
        shared, tmp_path):
    sweep, hub = tmp_path / "s", tmp_path / "hub"
    cmd = [f"hub.dir={hub}" if a.startswith("hub.dir=") else a for a in search_cmd(
        shared, sweep, "objective=train", "searcher=random", "search.n_trials=1", "recipe.epochs=3",
        "trainer.enable_progress_bar=false")]
    proc = launch(cmd, tmp_path)
    checkpoint = sweep / "trials" / "0000" / "last.ckpt"
    wait_for(proc, checkpoint.exists, "the first epoch's checkpoint")
    interrupted_at = time.time()
    text = ctrl_c(proc)
    assert "Detected KeyboardInterrupt" not in text  # Lightning's shutdown did not take over
    assert_one_resume_line(text, sweep)
    assert "0 trials finished, 1 in flight" in text
    first_attempt = journal(sweep)[0]  # trial 0 handed to the launcher

    text = console(run(cmd, tmp_path))  # resumes trial 0 from its checkpoint
    [trial] = latest(sweep).values()
    assert trial["status"] == "completed" and trial["extra"]["epochs"] == 3
    before = trial["extra"]["duration_before_resume_s"]  # the first attempt, to its checkpoint
    assert 0 < before < interrupted_at - first_attempt["time"]
    resumed_part = trial["extra"]["ended_at"] - trial["extra"]["started_at"]
    assert trial["duration_s"] == pytest.approx(before + resumed_part, abs=0.5)
    # a trial keeps what resume needs: last.ckpt, no best.ckpt or best weights beside it
    assert not list((sweep / "trials" / "0000").glob("best*"))

    block = summary_of(text, sweep)
    assert field(block, "trials") == "1 of 1 finished: 1 completed, 0 pruned, 0 failed"
    best = assert_best_fields(block, sweep, "val_top1")
    name = "gpunet_tiny_cpu_500ms_pm499p99_digits"
    assert field(block, "hub") == (f"added: {name} (top-1 {best['val_top1']:.4f}) is new in "
                                   f"{hub / 'hub.yaml'}")
    again = summary_of(console(run(cmd, tmp_path)), sweep)  # the same network again: kept
    assert field(again, "hub") == (f"kept: the hub's {name} has top-1 {best['val_top1']:.4f} >= "
                                   f"{best['val_top1']:.4f}")


@pytest.mark.e2e
def test_help_offers_only_real_latency_backends(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gpunet.search", "--help"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    groups = dict(re.findall(r"^(\w+): (.*)$", out.stdout.split("== Config ==")[0], re.M))
    assert groups["latency"] == "onnxruntime, tensorrt, torch"


def test_the_summary_survives_a_journal_with_every_status(tmp_path):
    """The formatting alone: counts by status, no best, the hub's reason when nothing was added."""
    from gpunet.search.journal import Trial
    from gpunet.search.summary import format_summary, hub_line

    trials = [Trial(i, i, [0], 1.0, status=s) for i, s in
              enumerate(["failed", "failed", "pruned", "running"])]
    hub = hub_line(None, objective="train", trains=True, hub_add=True)
    text = format_summary(tmp_path, trials, 5, "val_top1", None, hub)
    assert text.splitlines()[1:3] == [
        "  trials: 3 of 5 finished: 0 completed, 1 pruned, 2 failed (1 interrupted)",
        "  best: none (no trial finished with a value)"]
    assert text.endswith("  hub: not added: no trial finished with a value")


def _ignore_sigterm_and_sleep(ready: Path) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (ready.parent / "writing").write_text(str(os.getpid()))
    (ready.parent / "writing").rename(ready)  # whole, for the test's read
    time.sleep(120)
    return os.getpid()


def test_stopping_workers_kills_a_loky_worker_that_ignores_terminate(tmp_path):
    """joblib's loky workers have no Process.kill (their Popen lacks it): a worker that outlives
    terminate() must still be killed, not crash the Ctrl-C path (CI saw this under load)."""
    from joblib.externals.loky import get_reusable_executor

    from gpunet.search.summary import _stop_workers

    executor = get_reusable_executor(max_workers=1)
    ready = tmp_path / "ready"
    executor.submit(_ignore_sigterm_and_sleep, ready)
    deadline = time.monotonic() + 120  # the worker starts and ignores SIGTERM (slow under load)
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), "the loky worker never started its task"
    [worker] = [p for p in multiprocessing.active_children() if p.pid == int(ready.read_text())]
    _stop_workers(timeout_s=1.0)
    worker.join(5)
    assert not worker.is_alive()
    executor.shutdown(wait=False, kill_workers=True)


def test_a_widened_final_check_lists_the_first_few_and_the_best_then_counts_the_rest():
    from gpunet.search.summary import final_check_lines

    latencies = [1.2, 1.3, 1.15, 1.4, 1.25, 1.3, 1.05, 1.2, 0.9, 1.6]  # the 7th is the first within
    best = {"trial": 6, "final_check": {
        "tier_edge_ms": 1.1, "speed": 1.0, "rounds": 5, "widened_from": 5, "chosen": "why",
        "measured": [{"trial": i, "val_top1": 0.9 - 0.01 * i, "at_table_speed_ms": ms}
                     for i, ms in enumerate(latencies)]}}
    line = final_check_lines(best, "val_top1")[0]
    assert "the top 10 by val_top1" in line and "none of the top 5 was within the tier" in line
    assert "trial 6 (0.84, 1.050 ms)" in line and "trial 7" not in line
    assert line.endswith(", and 3 more (1 within the tier; best.yaml lists them)")

