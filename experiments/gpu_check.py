"""One-call GPU check: the GPU code paths of gpunet, run and measured in one go (issue 9, item 8).

    bash experiments/gpu_check.sh                          # on the GPU machine (what the device tool runs)
    GPU_CHECK_DEVICE=cpu bash experiments/gpu_check.sh     # the CPU dry run: same steps, tiny settings

The orchestrator (this file without --step) runs each step in its own process with its own
timeout, under one overall budget, goes on to the next step when one fails, hangs or is skipped,
and writes to --out (the device tool's $OUT when set) at most five files, since that tool brings
back at most eight: summary.md, summary.json, gpu_check.log (every step's output),
gpu_check_files.tar.gz (the whole work folder: latency table, fidelity CSV/PNG, training curves,
step logs; no checkpoints) and latency_fidelity.png. It prints a table of step status and
durations last.

Steps (in this order, which is also their priority when the budget runs short):

  env             versions, GPUs, nvidia-smi
  pytest_gpu      `pytest -m gpu` (on the CPU: only collected, since every one needs CUDA)
  latency_e2e     gpunet_0/1/2 vs timm efficientnet_b0/b2 and resnet50 with gpunet's own torch
                  backend: FP16, batch 1, channels_last, CUDA-graph replay timed with CUDA events,
                  median of 3 interleaved rounds x 200 replays; FP16-vs-FP32 output check first
  latency_table   a torch-CUDA table slice of Table 1's space: every layer of 24 Sobol networks
                  and of GPUNet-0/1/2, then those networks' fidelity report (gpunet.latency.validate's
                  functions), GPUNet-0/1/2's table sums vs their end-to-end latency, then a random
                  sample of the space's other entries while the step's time lasts
  train_amp       gpunet_0 trained 2 short epochs on fake data with 16-mixed precision (Lightning)
  train_ddp       the same on 2 GPUs with DDP; skipped with a note when fewer than 2 are visible
  tensorrt        gpunet_0 and one layer with the TensorRT backend; skipped when TensorRT is absent

In CPU mode (--device cpu) every step runs with tiny settings on the CPU backends where that
makes sense, and the GPU-only parts are skipped with their reason. No figure is ever made up: a
step that cannot measure says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATUSES = ("ok", "failed", "timeout", "skipped")
MIN_STEP_S = 15.0  # a step is not started with less of the budget left than this
FINALIZE_S = 10.0  # kept back from the budget for the summary and the archive


# -- settings per mode ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Mode:
    name: str  # "cuda" | "cpu"
    e2e_runs: int  # timed runs per round
    e2e_warmup: int
    e2e_rounds: int
    e2e_resolution: int | None  # None: each model's own resolution
    table_space: str
    table_networks: int
    table_rounds: int
    table_runs: int
    table_warmup: int
    table_archs: tuple[str, ...]
    table_extra: int  # at most this many further random entries of the space
    train_overrides: tuple[str, ...]


MODES = {
    "cuda": Mode("cuda", e2e_runs=200, e2e_warmup=20, e2e_rounds=3, e2e_resolution=None,
                 table_space="gpunet", table_networks=24, table_rounds=3, table_runs=50, table_warmup=10,
                 table_archs=("gpunet_0", "gpunet_1", "gpunet_2"), table_extra=400,
                 train_overrides=("device=h100", "data.train_size=2048", "data.val_size=256",
                                  "data.num_workers=4", "recipe.epochs=2")),
    "cpu": Mode("cpu", e2e_runs=3, e2e_warmup=1, e2e_rounds=1, e2e_resolution=64,
                table_space="cpu", table_networks=5, table_rounds=2, table_runs=3, table_warmup=1,
                table_archs=("gpunet_0",), table_extra=10,
                train_overrides=("device=cpu", "data.train_size=64", "data.val_size=32",
                                 "data.resolution=32", "recipe.batch_size=32", "recipe.epochs=1")),
}

# The comparison of latency_e2e: (timm name, resolution). GPUNets at their own resolution;
# EfficientNet-B0/B2 at the original paper's 224/260, ResNet-50 at 224.
E2E_MODELS = (("gpunet_0", None), ("gpunet_1", None), ("gpunet_2", None),
              ("efficientnet_b0", 224), ("efficientnet_b2", 260), ("resnet50", 224))

# The steps, in order: name -> (timeout in seconds on the GPU, on the CPU).
STEP_TIMEOUTS = {
    "env": (45, 60),
    "pytest_gpu": (120, 180),
    "latency_e2e": (100, 120),
    "latency_table": (200, 240),
    "train_amp": (100, 180),
    "train_ddp": (100, 60),
    "tensorrt": (60, 30),
}


# -- small helpers ----------------------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def is_rank_zero() -> bool:
    """False in the extra processes Lightning's DDP launcher starts (they re-run this command)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def device_slug(gpu_name: str) -> str:
    """'NVIDIA H200' -> 'h200': the device name of the latency table (its file name and context)."""
    words = [w for w in gpu_name.lower().replace("-", " ").split() if w not in ("nvidia", "tesla")]
    slug = "-".join("".join(c for c in w if c.isalnum()) for w in words).strip("-")
    return slug or "gpu"


def skipped(note: str) -> dict[str, Any]:
    return {"status": "skipped", "note": note}


class Skip(Exception):
    """A step cannot run here (no GPU, too few GPUs, library absent): skipped, with the reason."""


def need_cuda(mode: Mode, what: str, devices: int = 1) -> None:
    import torch

    if mode.name == "cpu":
        raise Skip(f"CPU dry run: {what} needs CUDA")
    if not torch.cuda.is_available():
        raise RuntimeError(f"--device cuda, but torch {torch.__version__} sees no GPU "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    if torch.cuda.device_count() < devices:
        raise Skip(f"{what} needs {devices} GPUs; {torch.cuda.device_count()} visible")


def compose(config: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from gpunet.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config, overrides=overrides)


def latency_cfg(mode: Mode, work: Path, runs: int, warmup: int, gpu_name: str | None = None):
    """gpunet's latency_apps config for this mode: torch backend, FP16 CUDA (device=h100's
    settings, named after the GPU present) or FP32 CPU on one thread."""
    over = [f"search_space={mode.table_space}", "latency=torch", f"latency.runs={runs}",
            f"latency.warmup={warmup}", f"latency.table={work / 'latency_table' / 'table.sqlite'}"]
    if mode.name == "cuda":
        if gpu_name is None:
            import torch

            gpu_name = torch.cuda.get_device_name(0)
        # ImageNet's 1000-class head, as GPUNet-0/1/2 and the paper's tables have.
        over += ["device=h100", f"device.name={device_slug(gpu_name)}", "latency.num_classes=1000"]
    else:
        over += ["device=cpu", "latency.threads=1"]
    return compose("latency_apps", over)


def train_cfg(mode: Mode, extra: list[str]):
    """gpunet's train config of the training steps: gpunet_0 on fake data, CSV logger."""
    return compose("train", ["arch=gpunet_0", "data=fake", "logger=csv", "trainer.enable_progress_bar=false",
                             *mode.train_overrides, *extra])


# -- the steps ------------------------------------------------------------------------------------
def step_env(mode: Mode, work: Path, deadline: float) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    versions = {}
    for dist in ("torch", "timm", "lightning", "torchmetrics", "onnx", "onnxruntime", "onnxscript",
                 "botorch", "hydra-core", "omegaconf", "antlr4-python3-runtime", "numpy", "scipy",
                 "matplotlib", "pytest", "hypothesis", "tensorrt"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    import gpunet  # noqa: F401  (the package imports with what is installed)

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    smi = None
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,"
                                  "clocks.sm,clocks.mem,temperature.gpu,power.draw,utilization.gpu",
                                  "--format=csv"], capture_output=True, text=True, timeout=20).stdout
            print(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout)
        except (subprocess.TimeoutExpired, OSError) as err:
            smi = f"nvidia-smi failed: {err}"
    results = {"python": sys.version.split()[0], "executable": sys.executable,
               "platform": platform.platform(), "cpus": os.cpu_count(),
               "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
               "cuda_available": torch.cuda.is_available(), "cuda_devices": torch.cuda.device_count(),
               "torch_cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
               "gpus": gpus, "nvidia_smi": smi, "versions": versions,
               "gpunet_from": str(Path(gpunet.__file__).parent)}
    print(json.dumps(results, indent=2, default=str))
    if mode.name == "cuda" and not gpus:
        return {"status": "failed", "note": "torch sees no GPU", "results": results}
    note = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) or "no GPU (CPU dry run)"
    return {"status": "ok", "note": note, "results": results}


def pytest_command(mode: Mode, work: Path) -> list[str]:
    # A test module that fails to import (a package the machine lacks) must not stop the GPU tests.
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rA",
           "--continue-on-collection-errors", f"--junitxml={work / 'pytest_gpu.xml'}", str(REPO / "tests")]
    return cmd + (["--collect-only"] if mode.name == "cpu" else [])


def step_pytest_gpu(mode: Mode, work: Path, deadline: float) -> dict[str, Any]:
    """`pytest -m gpu`, in its own process (so an import there cannot break this one)."""
    cmd = pytest_command(mode, work)
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=max(deadline - time.time() - 5, 5))
    print(proc.stdout, proc.stderr, sep="\n", flush=True)
    last = [line for line in proc.stdout.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
    results = {"returncode": proc.returncode, "summary": last[0], "command": " ".join(cmd)}
    if mode.name == "cpu":
        # Collected only: every gpu test needs CUDA. Exit code 0: they import and are selected.
        ok = proc.returncode == 0
        return {"status": "ok" if ok else "failed",
                "note": f"CPU dry run: collected only ({last[0]})", "results": results}
    # Exit code 5: nothing collected (no test marked gpu), which is a failure of this check too.
    return {"status": "ok" if proc.returncode == 0 else "failed", "note": last[0], "results": results}


def _rel_err(out, ref) -> float:
    import torch

    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def step_latency_e2e(mode: Mode, work: Path, deadline: float) -> dict[str, Any]:
    """gpunet_0/1/2 against timm baselines, through gpunet's own torch latency backend."""
    import numpy as np
    import timm
    import torch

    import gpunet  # noqa: F401  (registers gpunet_* with timm)
    from gpunet.config import plain
    from gpunet.latency.backends import create_backend

    if mode.name == "cuda":
        need_cuda(mode, "latency_e2e")
    cfg = latency_cfg(mode, work, mode.e2e_runs, mode.e2e_warmup)
    latency, device = plain(cfg.latency), plain(cfg.device)
    backend = create_backend(latency, device)
    rows, runners = [], []
    try:
        for name, res in E2E_MODELS:
            torch.manual_seed(0)
            model = timm.create_model(name, num_classes=1000).eval()
            r = mode.e2e_resolution or res or int(model.pretrained_cfg["input_size"][-1])
            params = sum(p.numel() for p in model.parameters())
            row = {"model": name, "resolution": r, "params_m": round(params / 1e6, 2)}
            if mode.name == "cuda":
                # Correct first: FP16 channels_last output against FP32 (TF32 off) on the same input.
                x = torch.randn(1, 3, r, r, device="cuda")
                tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
                with torch.inference_mode():
                    ref = model.cuda()(x)
                    out = model.half().to(memory_format=torch.channels_last)(
                        x.half().contiguous(memory_format=torch.channels_last))
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
                row["fp16_rel_err"] = _rel_err(out, ref)
                row["fp16_finite"] = bool(torch.isfinite(out).all())
                del x, ref, out
            t0 = time.perf_counter()
            runners.append(backend.prepare(model, (backend.batch_size, 3, r, r)))
            row["prepare_s"] = round(time.perf_counter() - t0, 2)
            row["samples"] = []
            rows.append(row)
        # Interleaved rounds: a drift of clocks or load hits every model alike.
        for _ in range(mode.e2e_rounds):
            for row, run in zip(rows, runners):
                row["samples"].append(run())
        for row in rows:
            all_ms = np.concatenate([np.asarray(s) for s in row.pop("samples")])
            rounds = [float(np.median(s)) for s in np.split(all_ms, mode.e2e_rounds)]
            row.update(runs=int(all_ms.size), median_ms=float(np.median(all_ms)),
                       p10_ms=float(np.percentile(all_ms, 10)), p90_ms=float(np.percentile(all_ms, 90)),
                       min_ms=float(all_ms.min()), round_medians_ms=rounds)
        context = backend.context()
    finally:
        backend.close()
    base = next(r["median_ms"] for r in rows if r["model"] == "efficientnet_b0")
    for row in rows:
        row["vs_efficientnet_b0"] = round(row["median_ms"] / base, 3)
    what = ("FP16, batch 1, channels_last, CUDA-graph replay, CUDA events" if mode.name == "cuda" else
            f"CPU dry run: torch FP32 on 1 thread at {mode.e2e_resolution} px, wall clock; not GPU figures")
    md = [f"# End-to-end latency: {context['hardware']} ({what})", "",
          f"gpunet's torch latency backend; median of {mode.e2e_rounds} interleaved rounds x "
          f"{mode.e2e_runs} runs (after {mode.e2e_warmup} warm-ups per round).", "",
          "| model | resolution | params (M) | median (ms) | p10 | p90 | round medians | vs EfficientNet-B0 |"
          + (" FP16 rel. err vs FP32 |" if mode.name == "cuda" else ""),
          "|---|---|---|---|---|---|---|---|" + ("---|" if mode.name == "cuda" else "")]
    for r in rows:
        md.append(f"| {r['model']} | {r['resolution']} | {r['params_m']} | {r['median_ms']:.4f} | "
                  f"{r['p10_ms']:.4f} | {r['p90_ms']:.4f} | "
                  f"{' / '.join(f'{m:.4f}' for m in r['round_medians_ms'])} | {r['vs_efficientnet_b0']} |"
                  + (f" {r['fp16_rel_err']:.2e} |" if mode.name == "cuda" else ""))
    md.append(f"\ncontext: `{json.dumps(context, default=str)}`\n")
    out = work / "latency_e2e"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency_e2e.md").write_text("\n".join(md))
    write_json(out / "latency_e2e.json", {"context": context, "what": what, "models": rows})
    print("\n".join(md))
    bad = [r["model"] for r in rows
           if mode.name == "cuda" and (not r["fp16_finite"] or r["fp16_rel_err"] > 5e-2)]
    note = ", ".join(f"{r['model']} {r['median_ms']:.3f}" for r in rows) + " ms"
    if bad:
        return {"status": "failed", "note": f"FP16 output off from FP32 for {bad}; {note}",
                "results": {"context": context, "models": rows, "markdown": "\n".join(md)}}
    return {"status": "ok", "note": note, "results": {"context": context, "models": rows,
                                                       "markdown": "\n".join(md)}}


def step_latency_table(mode: Mode, work: Path, deadline: float) -> dict[str, Any]:
    """A table slice of the search space, its fidelity report, and GPUNet-0/1/2 sum vs end to end."""
    import random
    from dataclasses import asdict as dc_asdict

    from gpunet.config import plain
    from gpunet.latency.backends import create_backend
    from gpunet.latency.build import LatencySetup, fill
    from gpunet.latency.estimate import estimate_spec, sum_spec
    from gpunet.latency.keys import spec_probes
    from gpunet.latency.space_keys import reach
    from gpunet.latency.validate import fidelity, measure_sample, write_outputs
    from gpunet.space import encoding_to_spec, released_spec, sobol_encodings, space_from_config

    if mode.name == "cuda":
        need_cuda(mode, "latency_table")
    out = work / "latency_table"
    out.mkdir(parents=True, exist_ok=True)
    cfg = latency_cfg(mode, work, mode.table_runs, mode.table_warmup)
    space = space_from_config(cfg.search_space)
    num_classes, seed = int(cfg.latency.num_classes), int(cfg.validate.seed)
    setup = LatencySetup.from_config(cfg)
    t0 = time.perf_counter()
    # 1. GPUNet-0/1/2's layers first: they also tell how long one entry takes on this machine.
    archs = {n: released_spec(n).with_num_classes(num_classes) for n in mode.table_archs}
    arch_report = fill([p for spec in archs.values() for p in spec_probes(spec)], setup,
                       ", ".join(archs))
    table = arch_report.table
    per_entry = arch_report.seconds / max(arch_report.measured, 1)
    # 2. The fidelity networks: as many of the first `table_networks` Sobol networks as the step's
    # time allows (measuring their missing entries, then preparing each network end to end, which
    # autotunes about as much again), at least 6.
    X_all = sobol_encodings(space, mode.table_networks, seed)
    net_probes = [spec_probes(encoding_to_spec(space, x, num_classes)) for x in X_all]
    present = table.keys()

    def expected_s(k: int) -> float:
        missing = {p.key for probes in net_probes[:k] for p in probes} - present
        layers = sum(len(probes) for probes in net_probes[:k])
        arch_layers = sum(len(spec_probes(s)) for s in archs.values())
        return per_entry * (len(missing) + 0.6 * layers + 0.6 * arch_layers)

    left = deadline - time.time() - 20
    networks = next((k for k in range(mode.table_networks, 5, -1) if expected_s(k) <= left),
                    min(6, mode.table_networks))
    print(f"one entry took {per_entry:.3f} s; {left:.0f} s left: {networks} fidelity networks "
          f"(expected {expected_s(networks):.0f} s)", flush=True)
    report = fill([p for probes in net_probes[:networks] for p in probes], setup,
                  f"{networks} Sobol networks of {space.name!r}")
    table = report.table
    measured = arch_report.measured + report.measured
    results: dict[str, Any] = {"table": str(table.path), "context": table.context,
                               "seconds_per_entry_first": round(per_entry, 4),
                               "networks_planned": mode.table_networks, "networks": networks,
                               "entries_required": len(report.table), "measured_required": measured,
                               "seconds_required_entries": round(time.perf_counter() - t0, 1)}
    # Fidelity: the validate app's own functions (its `validate()` would first build the whole
    # space's table, 133k entries for Table 1).
    t1 = time.perf_counter()
    sample = measure_sample(space, table, setup, X_all[:networks], mode.table_rounds)
    fid = fidelity(sample["sum_ms"], sample["entries"], sample["mparams"], sample["measured_ms"])
    table.set_calibration(fid.calibration)
    md = write_outputs(out / "latency_fidelity", space.name, table, sample, fid)
    results["fidelity"] = dc_asdict(fid)
    results["fidelity_markdown"] = md
    results["seconds_fidelity"] = round(time.perf_counter() - t1, 1)
    # GPUNet-0/1/2: table sum (raw and calibrated) against the same backend end to end.
    backend = create_backend(plain(cfg.latency), plain(cfg.device))
    try:
        arch_rows = []
        for name, spec in archs.items():
            sums = sum_spec(spec, table)
            e2e = backend.measure_network(spec)
            arch_rows.append({"arch": name, "entries": sums.entries, "table_sum_ms": sums.total_ns / 1e6,
                              "calibrated_ms": estimate_spec(spec, table, calibrated=True),
                              "end_to_end_ms": e2e.median_ms, "end_to_end_p90_ms": e2e.p90_ms})
    finally:
        backend.close()
    results["archs"] = arch_rows
    arch_md = ["| arch | entries | table sum (ms) | calibrated (ms) | end to end (ms) |",
               "|---|---|---|---|---|"]
    arch_md += [f"| {r['arch']} | {r['entries']} | {r['table_sum_ms']:.4f} | {r['calibrated_ms']:.4f} | "
                f"{r['end_to_end_ms']:.4f} |" for r in arch_rows]
    results["archs_markdown"] = "\n".join(arch_md)
    print(results["archs_markdown"], flush=True)
    write_json(out / "slice.json", results)  # kept even if the extras below run out of time
    # Extras: a random sample of the space's other entries, in chunks, while the step's time lasts.
    extra = reach(space, num_classes).probes()
    present = table.keys()
    extra = [p for p in {p.key: p for p in extra}.values() if p.key not in present]
    random.Random(seed).shuffle(extra)
    extra = extra[:mode.table_extra]
    done, t2 = 0, time.perf_counter()
    for i in range(0, len(extra), 25):
        chunk = extra[i:i + 25]
        left = deadline - time.time() - 10
        if left < per_entry * len(chunk) * 1.5 or left < 5:
            break
        t = time.perf_counter()
        fill(chunk, setup, f"extra sample {i // 25 + 1}")
        per_entry = (time.perf_counter() - t) / len(chunk)
        done += len(chunk)
    results["extra_entries"] = done
    results["seconds_extra"] = round(time.perf_counter() - t2, 1)
    results["entries"] = len(table)
    results["seconds_per_entry"] = round((arch_report.seconds + report.seconds + results["seconds_extra"]) /
                                         max(measured + done, 1), 3)
    write_json(out / "slice.json", results)
    note = (f"{len(table)} entries ({measured + done} measured, "
            f"{results['seconds_per_entry']} s each); {fid.networks} networks: tau {fid.kendall_tau:.3f}, "
            f"MAPE {fid.mape_pct:.1f}%, calibrated LOO MAPE {fid.calibrated_loo_mape_pct:.1f}%")
    if mode.name == "cpu":
        note = "CPU dry run (torch FP32, 3 runs): " + note
    return {"status": "ok", "note": note, "results": results}


def _train(mode: Mode, work: Path, name: str, extra: list[str]) -> dict[str, Any]:
    import torch

    from gpunet.models import resolve_spec
    from gpunet.space import space_from_config
    from gpunet.train.recipe import precision
    from gpunet.train.run import fit_candidate

    cfg = train_cfg(mode, extra)
    spec = resolve_spec(cfg.arch, space_from_config(cfg.search_space))
    out = work / name
    if mode.name == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = fit_candidate(cfg, spec, out)
    seconds = time.perf_counter() - t0
    if not is_rank_zero():
        return {"status": "ok", "note": "DDP rank > 0"}
    ckpts = {p.name: p.stat().st_size for p in out.glob("*.ckpt")}
    scaler = None
    if (out / "last.ckpt").is_file():  # AMP's grad scaler state is saved with the checkpoint
        scaler = "MixedPrecision" in torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)
    for p in out.glob("*.ckpt"):
        p.unlink(missing_ok=True)  # ~150 MB each with the optimizer state; not worth carrying back
    images = int(cfg.data.train_size) * result.epochs
    res = {"precision": precision(cfg.recipe, cfg.device), "devices": int(cfg.trainer.devices),
           "status": result.status, "error": result.error, "epochs": result.epochs,
           "val_top1_curve": result.curve, "seconds": round(seconds, 1),
           "train_images_per_s_incl_val_and_startup": round(images / seconds, 1),
           "resolution": int(cfg.data.resolution or spec.resolution),
           "batch_size": int(cfg.recipe.batch_size),
           "checkpoint_bytes": ckpts, "grad_scaler_in_checkpoint": scaler,
           "max_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
           if torch.cuda.is_available() else None}
    print(json.dumps(res, indent=2), flush=True)
    ok = result.status == "completed" and result.epochs == int(cfg.recipe.epochs)
    if mode.name == "cuda" and res["precision"] == "16-mixed" and not scaler:
        ok, result.error = False, "16-mixed training left no grad-scaler state in last.ckpt"
    note = (f"{res['precision']}, {res['devices']} device(s), {result.epochs} epochs at "
            f"{res['resolution']} px in {res['seconds']} s "
            f"({res['train_images_per_s_incl_val_and_startup']} img/s "
            f"incl. validation and start-up); fake data, so top-1 means nothing")
    if mode.name == "cpu":
        note = "CPU dry run (32-true, no AMP): " + note
    return {"status": "ok" if ok else "failed", "note": note if ok else f"{result.status}: {result.error}",
            "results": res}


def step_train_amp(mode: Mode, work: Path, deadline: float) -> dict[str, Any]:
    if mode.name == "cuda":
        need_cuda(mode, "train_amp")
    return _train(mode, work, "train_amp", [])


def step_train_ddp(mode: Mode, work: Path, deadline: float) -> dict[str, Any]:
    need_cuda(mode, "2-GPU DDP training", devices=2)
    return _train(mode, work, "train_ddp", ["trainer.devices=2", "+trainer.strategy=ddp"])


def step_tensorrt(mode: Mode, work: Path, deadline: float) -> dict[str, Any]:
    import importlib.util

    need_cuda(mode, "the TensorRT backend")
    if importlib.util.find_spec("tensorrt") is None:
        raise Skip("TensorRT is not installed on this machine (its wheels are far over the 64 MiB "
                   "the device tool carries): the tensorrt backend stays unrun")
    from gpunet.config import plain
    from gpunet.latency.backends import create_backend
    from gpunet.latency.keys import spec_probes
    from gpunet.space import released_spec

    cfg = latency_cfg(mode, work, 200, 20)
    lat = {**plain(cfg.latency), "name": "tensorrt", "opset": 17, "workspace_gib": 4}
    backend = create_backend(lat, plain(cfg.device))
    try:
        spec = released_spec("gpunet_0")
        layer = backend.measure_probe(spec_probes(spec)[3])
        net = backend.measure_network(spec)
        res = {"context": backend.context(), "layer3_ms": layer.median_ms, "gpunet_0_ms": net.median_ms,
               "gpunet_0_p90_ms": net.p90_ms}
    finally:
        backend.close()
    return {"status": "ok", "note": f"gpunet_0 {net.median_ms:.4f} ms (TensorRT FP16)", "results": res}


STEPS: dict[str, Callable[[Mode, Path, float], dict[str, Any]]] = {
    "env": step_env, "pytest_gpu": step_pytest_gpu, "latency_e2e": step_latency_e2e,
    "latency_table": step_latency_table, "train_amp": step_train_amp, "train_ddp": step_train_ddp,
    "tensorrt": step_tensorrt}
assert list(STEPS) == list(STEP_TIMEOUTS)


def run_one_step(name: str, mode: Mode, work: Path, deadline: float) -> int:
    """What `--step NAME` does in its own process: run the step, write steps/NAME.json."""
    path = work / "steps" / f"{name}.json"
    try:
        result = STEPS[name](mode, work, deadline)
    except Skip as why:
        result = skipped(str(why))
    except Exception as err:
        traceback.print_exc()
        result = {"status": "failed", "note": f"{type(err).__name__}: {err}"[:500]}
    if is_rank_zero():
        write_json(path, result)
    return 0 if result["status"] in ("ok", "skipped") else 1


# -- the orchestrator -------------------------------------------------------------------------------
@dataclass
class Step:
    name: str
    command: list[str]
    timeout: float
    result_file: Path | None = None  # the JSON the step writes ({status, note, results})


@dataclass
class StepRecord:
    name: str
    status: str
    seconds: float
    timeout: float
    note: str = ""
    returncode: int | None = None
    log: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def _kill_group(proc: subprocess.Popen) -> None:
    """End the step's whole process group (it started a new session): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_steps(steps: list[Step], logs: Path, budget_s: float, env: dict[str, str] | None = None,
              echo: Callable[[str], None] = print) -> list[StepRecord]:
    """Run each step in its own process session, logging to logs/NAME.log, with its timeout clipped
    to what is left of the budget. A failure, a timeout or a skip never stops the steps after it."""
    logs.mkdir(parents=True, exist_ok=True)
    start, records = time.time(), []
    for step in steps:
        left = budget_s - (time.time() - start) - FINALIZE_S
        timeout = min(step.timeout, left)
        if left < min(step.timeout, MIN_STEP_S):
            records.append(StepRecord(step.name, "skipped", 0.0, 0.0,
                                      f"budget spent ({max(left, 0):.0f} s of {budget_s:.0f} s left)"))
            echo(f"[gpu_check] {step.name}: skipped, budget spent")
            continue
        log = logs / f"{step.name}.log"
        if step.result_file is not None:
            step.result_file.unlink(missing_ok=True)
        echo(f"[gpu_check] {step.name}: starting (timeout {timeout:.0f} s)")
        t0 = time.time()
        step_env = {**os.environ, **(env or {}), "GPU_CHECK_DEADLINE": f"{t0 + timeout:.3f}"}
        with open(log, "w") as fh:
            proc = subprocess.Popen(step.command, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                    env=step_env, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                rc, timed_out = proc.returncode, True
        seconds = time.time() - t0
        data: dict[str, Any] = {}
        if step.result_file is not None and step.result_file.is_file():
            try:
                data = json.loads(step.result_file.read_text())
            except json.JSONDecodeError as err:
                data = {"status": "failed", "note": f"unreadable result file: {err}"}
        if timed_out:
            status, note = "timeout", f"killed after {timeout:.0f} s"
        elif data.get("status") in STATUSES:
            status, note = data["status"], data.get("note", "")
        elif rc == 0:
            status, note = ("ok", "") if step.result_file is None else ("failed", "no result file")
        else:
            status, note = "failed", f"exit code {rc}"
        if status == "ok" and rc not in (0, None) and step.result_file is None:
            status = "failed"
        rec = StepRecord(step.name, status, round(seconds, 1), round(timeout, 1), note, rc,
                         str(log), data.get("results", {}))
        records.append(rec)
        echo(f"[gpu_check] {step.name}: {status} in {seconds:.1f} s  {note}")
        if status in ("failed", "timeout"):
            echo(f"[gpu_check] --- last lines of {log.name} ---\n{tail(log)}\n[gpu_check] ---")
    return records


def status_table(records: list[StepRecord]) -> str:
    lines = ["| step | status | seconds | timeout | note |", "|---|---|---|---|---|"]
    for r in records:
        note = r.note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.timeout:.0f} | {note} |")
    return "\n".join(lines)


def summary_markdown(mode: Mode, records: list[StepRecord], total_s: float, started: str) -> str:
    env = next((r.results for r in records if r.name == "env"), {})
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in env.get("gpus", [])) or "none"
    md = [f"# gpunet GPU check ({'CPU dry run: no GPU figures' if mode.name == 'cpu' else 'CUDA'})", "",
          f"Started {started}, {total_s:.0f} s in all; GPUs: {gpus}; "
          f"torch {env.get('versions', {}).get('torch')}, "
          f"CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}; `bash experiments/gpu_check.sh`"
          f"{' with GPU_CHECK_DEVICE=cpu' if mode.name == 'cpu' else ''}.", "",
          status_table(records), ""]
    by = {r.name: r for r in records}
    if by.get("latency_e2e") and by["latency_e2e"].results.get("markdown"):
        md += ["## " + by["latency_e2e"].results["markdown"].lstrip("# "), ""]
    if by.get("latency_table") and by["latency_table"].results.get("fidelity_markdown"):
        t = by["latency_table"].results
        md += ["## " + t["fidelity_markdown"].lstrip("# "),
               f"Table slice: {t.get('entries')} entries ({t.get('seconds_per_entry')} s per entry measured; "
               f"{t.get('networks')} of {t.get('networks_planned')} planned fidelity networks, "
               f"{t.get('extra_entries')} extra random entries), `{t.get('table')}`.", "",
               "GPUNet-0/1/2 (NVIDIA's released JSON), table estimate vs end to end:", "",
               t.get("archs_markdown", ""), ""]
    for name in ("pytest_gpu", "train_amp", "train_ddp", "tensorrt"):
        if by.get(name) and by[name].results:
            md += [f"## {name}", "", "```", json.dumps(by[name].results, indent=2, default=str), "```", ""]
    return "\n".join(md)


def pack(out: Path, work: Path, records: list[StepRecord], summary_md: str, summary: dict) -> list[Path]:
    """At most five files in `out`: the device tool brings back eight, two folders deep."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "summary.md", out / "summary.json", out / "gpu_check.log", out / "gpu_check_files.tar.gz"]
    files[0].write_text(summary_md)
    write_json(files[1], summary)
    with open(files[2], "w") as fh:
        for r in records:
            fh.write(f"===== {r.name}: {r.status} in {r.seconds} s =====\n")
            if r.log:
                fh.write(Path(r.log).read_text(errors="replace") if Path(r.log).is_file() else "(no log)\n")
    with tarfile.open(files[3], "w:gz") as tar:
        tar.add(work, arcname="gpu_check_files",
                filter=lambda ti: None if ti.name.endswith((".ckpt", ".pt")) else ti)
    png = work / "latency_table" / "latency_fidelity.png"
    if png.is_file():
        files.append(out / png.name)
        shutil.copyfile(png, files[-1])
    return files


def build_steps(mode: Mode, work: Path, only: list[str] | None) -> list[Step]:
    steps = []
    for name in STEPS:
        if only and name not in only:
            continue
        timeout = STEP_TIMEOUTS[name][0 if mode.name == "cuda" else 1]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--device", mode.name,
               "--work", str(work)]
        steps.append(Step(name, cmd, timeout, work / "steps" / f"{name}.json"))
    return steps


def orchestrate(args: argparse.Namespace) -> int:
    mode = MODES[args.device]
    out = Path(args.out).resolve()
    work = Path(args.work).resolve()
    if work == out or out in work.parents or work in out.parents:
        raise SystemExit(f"--work ({work}) and --out ({out}) must be separate folders")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.time()
    print(f"[gpu_check] mode {mode.name}, budget {args.budget:.0f} s, work {work}, out {out}", flush=True)
    env = {"PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "GPUNET_HUB_DIR": str(work / "hub"),
           "WANDB_MODE": "disabled"}
    records = run_steps(build_steps(mode, work, args.only), work / "logs", args.budget, env,
                        echo=lambda s: print(s, flush=True))
    total = time.time() - t0
    summary = {"mode": mode.name, "started": started, "total_seconds": round(total, 1),
               "budget_seconds": args.budget, "mode_settings": asdict(mode),
               "steps": [asdict(r) for r in records]}
    files = pack(out, work, records, summary_markdown(mode, records, total, started), summary)
    print(f"\n[gpu_check] wrote {', '.join(str(f) for f in files)}")
    print(f"[gpu_check] {mode.name} mode, {total:.0f} s in all (budget {args.budget:.0f} s)\n")
    print(status_table(records), flush=True)
    return 0 if all(r.status in ("ok", "skipped") for r in records) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=sorted(MODES), default=os.environ.get("GPU_CHECK_DEVICE", "cuda"))
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "outputs" / "gpu_check" / "out"),
                   help="the few result files ($OUT of the device tool when set)")
    p.add_argument("--work", default=str(REPO / "outputs" / "gpu_check" / "work"),
                   help="everything else (emptied first; archived into --out)")
    p.add_argument("--budget", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET_S", 450)),
                   help="seconds for all steps together (default 450: 7.5 minutes)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    p.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:
        deadline = float(os.environ.get("GPU_CHECK_DEADLINE", time.time() + 600))
        return run_one_step(args.step, MODES[args.device], Path(args.work), deadline)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
