"""Data-parallel training as a user launches it (`python -m gpunet.train trainer.devices=2
+trainer.strategy=ddp`), on two CPU processes (gloo): EMA on, ranks agree on the top-1, only rank 0
writes files, the lr follows the global batch, and a resumed run continues its EMA exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec
from gpunet.train.module import FrozenEma

TINY = NetworkSpec(32, (LayerSpec("conv", 3, 8, 2, 3, "swish"),
                        LayerSpec("fused_irb", 8, 16, 2, 3, "relu", 2.0),
                        LayerSpec("irb", 16, 16, 1, 3, "swish", 2.0, se=True)),
                   HeadSpec(16, 32, 10), name="tiny")
WORLD, BATCH, ACCUMULATE, TRAIN_SIZE = 2, 8, 2, 64
UPDATES_PER_EPOCH = TRAIN_SIZE // WORLD // BATCH // ACCUMULATE  # each rank sees half the data
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on shared cores: one thread each
RANK_LINE = re.compile(r"rank (\d) of (\d): best val top-1 (\S+), curve (\[.*?\])")


Run = tuple[subprocess.Popen, Path]  # a launched run and the file its output goes to


def launch(run_dir: Path, spec: Path, epochs: int) -> Run:
    """A two-process run in `run_dir`, with a schedule that does not depend on the number of epochs
    (constant after one epoch of warm-up), so that a resumed run can end where a straight one does.
    Its output goes to a file (a pipe could fill up while nobody reads it)."""
    output = run_dir.with_name(f"{run_dir.name}-{epochs}.out")
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpunet.train", f"arch={spec}", "data=fake", "data.resolution=32",
             f"data.train_size={TRAIN_SIZE}", "data.val_size=30", f"recipe.batch_size={BATCH}",
             "recipe.ema=true", "recipe.drop=0", "recipe.sched=constant", f"recipe.epochs={epochs}",
             f"trainer.devices={WORLD}", "+trainer.strategy=ddp", "trainer.enable_progress_bar=false",
             f"+trainer.accumulate_grad_batches={ACCUMULATE}", f"hydra.run.dir={run_dir}"],
            env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, output


def reports(run: Run) -> list[tuple[int, float, list[float]]]:
    """What each rank of a finished run reported (its best top-1 and curve), by rank."""
    proc, output = run
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks
        raise
    text = output.read_text()
    assert proc.returncode == 0, text[-6000:]
    assert text.count("best_val_top1=") == 1, "rank 0 alone prints the result"
    ranks = sorted((int(r), float(top1), json.loads(curve))
                   for r, world, top1, curve in RANK_LINE.findall(text) if int(world) == WORLD)
    assert [r for r, _, _ in ranks] == list(range(WORLD)), text[-6000:]
    assert all(r[1:] == ranks[0][1:] for r in ranks), f"ranks disagree: {ranks}"
    return ranks


def train_one_epoch_then_resume(run_dir: Path, spec: Path) -> list[tuple[int, float, list[float]]]:
    """One epoch, then a second run with recipe.epochs=2 resuming from last.ckpt; checks both."""
    first = reports(launch(run_dir, spec, epochs=1))
    assert len(first[0][2]) == 1 and first[0][1] == first[0][2][0]
    ckpt = torch.load(run_dir / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == UPDATES_PER_EPOCH
    # the lr is scaled by the global batch; the schedule counts the updates of one rank
    recipe = ckpt["hyper_parameters"]["recipe"]
    lr = recipe["lr"] * BATCH * WORLD * ACCUMULATE / recipe["lr_base_batch"]
    assert ckpt["lr_schedulers"][0]["base_values"] == pytest.approx([lr, lr])  # with/without decay
    assert ckpt["lr_schedulers"][0]["warmup_t"] == recipe["warmup_epochs"] * UPDATES_PER_EPOCH
    assert [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]] == pytest.approx([lr, lr])

    second = reports(launch(run_dir, spec, epochs=2))  # resumes from last.ckpt: one more epoch
    curve = json.loads((run_dir / "curve.json").read_text())["curve"]
    assert curve == second[0][2] and len(curve) == 2 and curve[0] == first[0][2][0]
    ckpt = torch.load(run_dir / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * UPDATES_PER_EPOCH
    # the EMA is a separate, updated copy, in the state_dict and under timm's key
    weights = ckpt["state_dict"]
    ema = {k.removeprefix("ema.module."): v for k, v in weights.items() if k.startswith("ema.module.")}
    assert any(not torch.equal(v, weights[f"model.{k}"]) for k, v in ema.items()), "EMA == model"
    torch.testing.assert_close(ckpt["state_dict_ema"], ema, rtol=0, atol=0)
    # rank 0 wrote every file but rank 1's own log: one CSV log per attempt, no temp files
    assert {p.name for p in run_dir.iterdir() if p.suffix != ".log"} == {
        ".hydra", "csv", "curve.json", "best.pth", "last.ckpt"}
    assert sorted(p.name for p in (run_dir / "csv").iterdir()) == ["version_0", "version_1"]
    assert not list(run_dir.rglob("*.tmp"))
    return second


@pytest.mark.e2e
def test_two_process_ddp_with_ema_agrees_across_ranks_and_resumes(tmp_path) -> None:
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY.to_dict()))
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    reference = launch(straight, spec, epochs=2)  # alongside: a core idles while a run's ranks start
    try:
        resumed_reports = train_one_epoch_then_resume(resumed, spec)
        assert reports(reference) == resumed_reports
    finally:
        if reference[0].poll() is None:  # the resumed run failed first: stop both ranks
            os.killpg(reference[0].pid, signal.SIGKILL)
            reference[0].wait()
    # resuming restored the EMA (and the rest of the state): it ends exactly where a straight run does
    ckpt, reference_ckpt = (torch.load(d / "last.ckpt", weights_only=False) for d in (resumed, straight))
    torch.testing.assert_close(ckpt["state_dict"], reference_ckpt["state_dict"], rtol=0, atol=0)
    torch.testing.assert_close(ckpt["optimizer_states"], reference_ckpt["optimizer_states"], rtol=0, atol=0)


def _check_frozen(rank: int, ema: FrozenEma) -> None:
    assert not any(p.requires_grad for p in ema.parameters())


def test_the_ema_is_frozen_and_reaches_spawned_processes() -> None:
    """`strategy=ddp_spawn` pickles the module to its workers, and pickling timm's EMA, which holds
    a torch.Generator, fails there with "unable to resize file" (pytorch#146828)."""
    ema = FrozenEma(torch.nn.Linear(2, 2), decay=0.9)
    ema.update(torch.nn.Linear(2, 2))
    assert not any(p.requires_grad for p in ema.parameters())
    torch.multiprocessing.spawn(_check_frozen, args=(ema,), nprocs=1)
