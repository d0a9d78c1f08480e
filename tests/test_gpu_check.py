"""experiments/gpu_check: the one-call GPU check's orchestration, configs and CPU dry run.

The GPU itself is not here: these tests prove the script's logic (per-step timeouts, going on
after a failure, the summary and the few files the device tool brings back), that its CUDA-mode
configs compose, and, marked slow, that the whole CPU dry run passes end to end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "experiments" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_steps_go_on_after_a_failure_a_hang_and_a_skip(gc, tmp_path):
    pidfile = tmp_path / "child.pid"
    steps = [
        gc.Step("ok", py(f"import json, pathlib; pathlib.Path({str(tmp_path / 'ok.json')!r}).write_text("
                         "json.dumps({'status': 'ok', 'note': 'fine', 'results': {'x': 1}}))"),
                20, tmp_path / "ok.json"),
        # a hung step whose own child must die with it
        gc.Step("hang", ["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], 2),
        gc.Step("crash", py("import sys; print('boom'); sys.exit(3)"), 20, tmp_path / "crash.json"),
        gc.Step("skip", py(f"import json, pathlib; pathlib.Path({str(tmp_path / 'skip.json')!r}).write_text("
                           "json.dumps({'status': 'skipped', 'note': 'no GPU'}))"),
                20, tmp_path / "skip.json"),
        gc.Step("plain", py("print('no result file, exit 0')"), 20),
    ]
    t0 = time.time()
    records = gc.run_steps(steps, tmp_path / "logs", budget_s=120, echo=lambda s: None)
    assert time.time() - t0 < 30
    got = {r.name: r for r in records}
    assert [r.name for r in records] == ["ok", "hang", "crash", "skip", "plain"]
    assert got["ok"].status == "ok" and got["ok"].results == {"x": 1} and got["ok"].note == "fine"
    assert got["hang"].status == "timeout" and 1.5 < got["hang"].seconds < 15
    child = int(pidfile.read_text())
    # the step's process group was ended, its child too: gone, or a zombie that the container's
    # init has not reaped yet (it still answers kill(pid, 0), but runs no more)
    deadline = time.time() + 5
    while time.time() < deadline and running(child):
        time.sleep(0.05)
    assert not running(child)
    assert got["crash"].status == "failed" and got["crash"].returncode == 3
    assert "boom" in Path(got["crash"].log).read_text()
    assert got["skip"].status == "skipped" and got["skip"].note == "no GPU"
    assert got["plain"].status == "ok"
    table = gc.status_table(records)
    assert table.count("\n") == 6 and "| hang | timeout |" in table


def test_a_spent_budget_skips_the_remaining_steps(gc, tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "FINALIZE_S", 1.0)
    monkeypatch.setattr(gc, "MIN_STEP_S", 1.0)
    steps = [gc.Step("slow", py("import time; time.sleep(30)"), 60), gc.Step("next", py("pass"), 60)]
    records = gc.run_steps(steps, tmp_path / "logs", budget_s=3.5, echo=lambda s: None)
    assert records[0].status == "timeout" and records[0].timeout <= 2.5
    assert records[1].status == "skipped" and "budget spent" in records[1].note


def test_a_failing_step_function_writes_a_failed_result(gc, tmp_path, monkeypatch):
    def broken(mode, work, deadline):
        raise ValueError("no such thing")

    def absent(mode, work, deadline):
        raise gc.Skip("needs 2 GPUs")

    monkeypatch.setitem(gc.STEPS, "env", broken)
    monkeypatch.setitem(gc.STEPS, "tensorrt", absent)
    assert gc.run_one_step("env", gc.MODES["cpu"], tmp_path, time.time() + 10) == 1
    assert json.loads((tmp_path / "steps" / "env.json").read_text()) == {
        "status": "failed", "note": "ValueError: no such thing"}
    assert gc.run_one_step("tensorrt", gc.MODES["cpu"], tmp_path, time.time() + 10) == 0
    assert json.loads((tmp_path / "steps" / "tensorrt.json").read_text())["status"] == "skipped"


def test_the_packed_output_fits_what_the_device_tool_brings_back(gc, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "latency_table").mkdir(parents=True)
    (work / "latency_table" / "latency_fidelity.png").write_bytes(b"png")
    (work / "train_amp").mkdir()
    (work / "train_amp" / "last.ckpt").write_bytes(b"x" * 1000)
    log = work / "env.log"
    log.write_text("hello\n")
    records = [gc.StepRecord("env", "ok", 1.0, 45, "fine", 0, str(log), {})]
    files = gc.pack(out, work, records, "# summary", {"steps": []})
    assert len(files) <= 8 and sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and p.stat().st_size < 16 * 2**20 for p in files)
    import tarfile

    with tarfile.open(out / "gpu_check_files.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu_check_files/env.log" in names and not any(n.endswith(".ckpt") for n in names)
    assert "===== env: ok" in (out / "gpu_check.log").read_text()


def test_gpu_names_become_table_device_names(gc):
    assert gc.device_slug("NVIDIA H200") == "h200"
    assert gc.device_slug("NVIDIA A100-SXM4-80GB") == "a100-sxm4-80gb"
    assert gc.device_slug("Tesla V100-PCIE-16GB") == "v100-pcie-16gb"
    assert gc.device_slug("") == "gpu"


def test_cuda_mode_configs_compose(gc, tmp_path):
    """The configs the GPU steps use (they cannot run here): FP16 torch backend on a cuda device,
    16-mixed training on the GPU accelerator, DDP on two devices."""
    mode = gc.MODES["cuda"]
    cfg = gc.latency_cfg(mode, tmp_path, 50, 10, gpu_name="NVIDIA H200")
    assert (cfg.latency.name, cfg.latency.precision, cfg.latency.batch_size) == ("torch", "fp16", 1)
    assert (cfg.device.name, cfg.device.type, cfg.search_space.name) == ("h200", "cuda", "gpunet")
    assert cfg.latency.num_classes == 1000
    assert cfg.latency.table == str(tmp_path / "latency_table" / "table.sqlite")
    from gpunet.train.recipe import precision

    train = gc.train_cfg(mode, [])
    assert (train.device.accelerator, precision(train.recipe, train.device)) == ("gpu", "16-mixed")
    assert train.recipe.epochs == 2 and train.data.name == "fake"
    ddp = gc.train_cfg(mode, ["trainer.devices=2", "+trainer.strategy=ddp"])
    assert ddp.trainer.devices == 2 and ddp.trainer.strategy == "ddp"
    cpu = gc.latency_cfg(gc.MODES["cpu"], tmp_path, 3, 1)
    assert (cpu.device.type, cpu.latency.precision, cpu.latency.threads) == ("cpu", "fp32", 1)


def test_the_pytest_step_selects_the_gpu_marker(gc, tmp_path):
    cmd = gc.pytest_command(gc.MODES["cuda"], tmp_path)
    assert cmd[cmd.index("-m") + 2:cmd.index("-m") + 4] == ["-m", "gpu"] and "--collect-only" not in cmd
    assert "--collect-only" in gc.pytest_command(gc.MODES["cpu"], tmp_path)


@pytest.mark.slow
def test_cpu_dry_run_end_to_end(tmp_path):
    """`GPU_CHECK_DEVICE=cpu bash experiments/gpu_check.sh`: every step runs (or is skipped with its
    reason) on the CPU with tiny settings; about 1.5 minutes on 2 cores."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(REPO / "experiments" / "gpu_check.sh"), "--out", str(out),
                           "--work", str(work)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| tensorrt | skipped |")
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert status == {"env": "ok", "pytest_gpu": "ok", "latency_e2e": "ok", "latency_table": "ok",
                      "train_amp": "ok", "train_ddp": "skipped", "tensorrt": "skipped"}
    steps = {s["name"]: s for s in summary["steps"]}
    assert "needs CUDA" in steps["train_ddp"]["note"] and "needs CUDA" in steps["tensorrt"]["note"]
    e2e = steps["latency_e2e"]["results"]["models"]
    assert [m["model"] for m in e2e][:3] == ["gpunet_0", "gpunet_1", "gpunet_2"]
    assert all(m["median_ms"] > 0 and m["runs"] == 3 for m in e2e)
    table = steps["latency_table"]["results"]
    assert table["fidelity"]["networks"] == 5 and table["context"]["device"] == "cpu"
    assert [a["arch"] for a in table["archs"]] == ["gpunet_0"]
    assert len(list(out.iterdir())) <= 8
    assert "CPU dry run" in (out / "summary.md").read_text()
