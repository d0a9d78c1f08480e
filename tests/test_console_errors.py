"""What a user sees when a command is refused: real `python -m ...` runs, their console captured.

Errors the project raises on purpose (a bad setting, a corrupt latency table, an empty tier, a
wrong-length encoding, missing data) end in one `error: ...` line and a non-zero exit, without a
traceback; an unexpected error keeps its traceback, and HYDRA_FULL_ERROR=1 shows everything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_search_e2e import TESTS, search_cmd

pytestmark = pytest.mark.e2e  # the apps run in subprocesses (the e2e marker: pyproject.toml)

SMALLEST = "[" + ",".join(["0"] * 41) + "]"  # the smallest network of the gpunet space


def run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env = {**base, "PYTHONPATH": str(TESTS), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "gpunet.train", "trainer.enable_progress_bar=false", *overrides]


def ours(stderr: str) -> list[str]:
    """The non-empty lines of stderr, less libraries' Python warnings (`file:line: XWarning: ...`
    and the source line under it), which are printed on import whatever the command."""
    lines, skip_source = [], False
    for line in stderr.splitlines():
        if skip_source and line.startswith(" "):
            skip_source = False
            continue
        skip_source = bool(re.match(r"\S+:\d+: \w*Warning: ", line))
        if line.strip() and not skip_source:
            lines.append(line)
    return lines


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> str:
    """A non-zero exit, no traceback, and at most three non-empty lines on stderr, the first
    being `error: ...` with every fragment in the message."""
    shown = f"exit {out.returncode}\nstdout:\n{out.stdout[-2000:]}\nstderr:\n{out.stderr[-4000:]}"
    assert out.returncode != 0, shown
    assert "Traceback" not in out.stderr, shown
    lines = ours(out.stderr)
    assert 1 <= len(lines) <= 3, shown
    assert lines[0].startswith("error: "), shown
    message = "\n".join(lines)
    for fragment in fragments:
        assert fragment in message, shown
    return message


@pytest.fixture(scope="module")
def tiny_table(shared: Path, tmp_path_factory) -> Path:
    """The tiny test space's table, as the end-to-end searches build it (shared with them)."""
    path = shared / "tiny.sqlite"
    if not path.is_file():
        cmd = [sys.executable, "-m", "gpunet.latency.build", "search_space=tiny",
               f"hydra.searchpath=[file://{TESTS / 'conf'}]", f"latency.table={path}",
               "latency.runs=5", "latency.warmup=2"]
        cwd = tmp_path_factory.mktemp("build")
        out = run(cmd + [f"hydra.run.dir={cwd / 'run'}"], cwd)
        assert out.returncode == 0, out.stderr[-3000:]
    return path


def test_a_corrupt_latency_table_is_one_line(shared, tiny_table, tmp_path):
    bad = tmp_path / "truncated.sqlite"
    bad.write_bytes(tiny_table.read_bytes()[:20000])  # a copy cut short
    out = run([*search_cmd(shared, tmp_path / "s", f"latency.table={bad}")], tmp_path)
    assert_one_line_error(out, "is not a readable gpunet latency table", "latency.table=")
    assert not (tmp_path / "s").exists()


def test_an_empty_tier_is_one_line_and_leaves_no_sweep_dir(shared, tiny_table, tmp_path):
    sweep = tmp_path / "s"
    out = run(search_cmd(shared, sweep, "tier.target_ms=50", "tier.tolerance_ms=1"), tmp_path)
    assert_one_line_error(out, "holds none of", "estimated latencies span")
    assert out.returncode == 1
    assert not sweep.exists()  # no journal, no search.yaml: the next command starts clean


def test_a_grid_over_an_empty_tier_leaves_no_directory(shared, tiny_table, tmp_path):
    grid = tmp_path / "grid"
    out = run(search_cmd(shared, grid, "tier.target_ms=50", "tier.tolerance_ms=1", "seed=0,1"),
              tmp_path)
    assert_one_line_error(out, "holds none of")
    assert not grid.exists()  # neither the grid's multirun.yaml nor a point's directory


@pytest.mark.parametrize("n_trials", ["-3", "0"])
def test_a_budget_of_no_trials_is_refused_at_start(shared, tmp_path, n_trials):
    sweep = tmp_path / "s"
    out = run(search_cmd(shared, sweep, f"search.n_trials={n_trials}"), tmp_path)
    assert_one_line_error(out, f"search.n_trials={n_trials}", ">= 1")
    assert out.returncode == 2  # a bad setting: a usage error
    assert not sweep.exists()


def test_nonsense_numbers_are_each_named_with_their_range(shared, tmp_path):
    out = run(search_cmd(shared, tmp_path / "s", "objective=train", "tier.target_ms=1", "tier.tolerance_ms=2",
                         "search.batch_size=0", "search.max_failure_rate=1.5",
                         "search.pool.samples=0", "data.num_workers=-1", "recipe.batch_size=0",
                         "recipe.clip_grad=0", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"), tmp_path)
    message = assert_one_line_error(out, "tier.tolerance_ms=2", "search.batch_size=0",
                                    "search.max_failure_rate=1.5", "search.pool.samples=0",
                                    "data.num_workers=-1", "recipe.batch_size=0", "recipe.clip_grad=0",
                                    "hydra.launcher.n_jobs=0")
    assert "between 0 and 1" in message and "< tier.target_ms" in message


def test_a_wrong_length_encoding_is_one_line(tmp_path):
    out = run(train_cmd("arch=[2,0,1,0,1]", f"hydra.run.dir={tmp_path / 'run'}"), tmp_path)
    assert_one_line_error(out, "an encoding of search space 'cpu' has 41 digits, got 5")


def test_hydra_full_error_shows_the_traceback(tmp_path):
    out = run(train_cmd("arch=[2,0,1,0,1]", f"hydra.run.dir={tmp_path / 'run'}"), tmp_path,
              HYDRA_FULL_ERROR="1")
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "has 41 digits, got 5" in out.stderr


def test_missing_data_root_is_one_line(tmp_path):
    out = run(train_cmd("arch=gpunet_0", "data=imagefolder", "data.num_classes=10",
                        f"hydra.run.dir={tmp_path / 'run'}"), tmp_path)
    assert_one_line_error(out, "data=imagefolder needs data.root=")


def test_an_unexpected_error_keeps_its_traceback(tmp_path):
    """timm refusing an optimizer name is not an error of ours: the traceback says where."""
    out = run(train_cmd(f"arch={SMALLEST}", "search_space=gpunet", "data=fake", "data.resolution=32",
                        "data.train_size=16", "data.val_size=16", "recipe.batch_size=16",
                        "recipe.opt=no_such_optimizer", f"hydra.run.dir={tmp_path / 'run'}"), tmp_path)
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "no_such_optimizer" in out.stderr.lower()
    assert "error: " not in out.stderr.splitlines()[0]


def test_a_run_that_is_all_warm_up_is_warned_about(tmp_path):
    """recipe.epochs <= recipe.warmup_epochs is a warning, not an error: such a run ranks nothing
    (the lr never leaves its warm-up), but it is the cheapest smoke test of the pipeline."""
    out = run(train_cmd(f"arch={SMALLEST}", "search_space=gpunet", "data=fake", "data.resolution=32",
                        "data.train_size=16", "data.val_size=16", "recipe.batch_size=16",
                        "recipe.epochs=1", "recipe.warmup_epochs=2",
                        f"hydra.run.dir={tmp_path / 'run'}"), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    console = out.stdout + out.stderr
    assert "recipe.epochs=1 <= recipe.warmup_epochs=2" in console and "warm-up" in console
