"""`python -m gpunet.train` as a user runs it: Hydra multirun sweeps, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e  # the apps run in subprocesses (the e2e marker: pyproject.toml)

SMALLEST = "[" + ",".join(["0"] * 41) + "]"  # the smallest network of the gpunet space
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models on shared cores: one thread is fastest


def train_cmd(*overrides: str, multirun: bool = False) -> list[str]:
    return [sys.executable, "-m", "gpunet.train", *(["-m"] if multirun else []), "search_space=gpunet",
            "data=fake", "data.resolution=32", "trainer.enable_progress_bar=false", *overrides]


def test_multirun_sweeps_a_recipe_grid(tmp_path) -> None:
    out = subprocess.run(
        train_cmd(f"arch={SMALLEST}", "data.train_size=64", "data.val_size=32", "recipe.batch_size=16",
                  "recipe.epochs=1", "recipe.lr=0.03,0.06", f"hydra.sweep.dir={tmp_path}", multirun=True),
        env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("best_val_top1=") == 2
    for job, lr in (("0", "0.03"), ("1", "0.06")):
        assert f"recipe.lr={lr}" in (tmp_path / job / ".hydra" / "overrides.yaml").read_text()
        assert len(json.loads((tmp_path / job / "curve.json").read_text())["curve"]) == 1


def first_epoch_saved(run_dir: Path) -> bool:
    """The first epoch's files are complete: curve.json has a point, last.ckpt loads and the CSV log
    has been written."""
    try:
        saved = json.loads((run_dir / "curve.json").read_text())["curve"]
        torch.load(run_dir / "last.ckpt", weights_only=False)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError):  # not (fully) written yet
        return False
    return len(saved) > 0 and any(run_dir.glob("csv/version_*/metrics.csv"))


@pytest.mark.slow
def test_a_killed_run_resumes_and_loses_no_epoch(tmp_path) -> None:
    encoding = "'" + ",".join(["0"] * 41) + "'"
    cmd = train_cmd(f"arch={encoding}", "data.train_size=3072", "data.val_size=64", "recipe.batch_size=32",
                    "recipe.epochs=3", f"hydra.run.dir={tmp_path}")
    last = tmp_path / "last.ckpt"
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not first_epoch_saved(tmp_path):
            assert proc.poll() is None, f"the run exited ({proc.returncode}) before saving an epoch"
            assert time.monotonic() < deadline, "the first epoch's files were not all there after 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # the first epoch is saved: the second has begun
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert torch.load(last, weights_only=False)["epoch"] == 0, "killed after, not during, epoch 2"
    curve_before = json.loads((tmp_path / "curve.json").read_text())["curve"]
    assert len(curve_before) == 1

    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    curve = json.loads((tmp_path / "curve.json").read_text())["curve"]
    assert len(curve) == 3 and curve[0] == curve_before[0]
    assert torch.load(last, weights_only=False)["epoch"] == 2
    assert "best_val_top1=" in out.stdout
    assert len(list(Path(tmp_path, "csv").glob("version_*/metrics.csv"))) == 2  # one per attempt
