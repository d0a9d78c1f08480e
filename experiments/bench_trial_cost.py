"""Where does one trial of the default search spend its time? (issue 11, item 2)

Two measurements, both in CPU seconds (process time, so that a loaded machine does not inflate
them; wall seconds are given beside them):

1. process start and imports: a fresh interpreter importing what a trial job imports
   (gpunet.search.job and gpunet.train.run with torch, Lightning, timm, Hydra), and composing the
   default search's config;
2. one trial: `fit_candidate` (what a search job runs) on candidate 0 of
   experiments/bench_data_signal.py's candidates with the default search's config (data=digits,
   recipe=proxy), under cProfile with a CPU-time timer, split into data loading and transforms,
   the training forward, backward and optimizer step, validation, checkpoints, loggers and the
   rest (Lightning's loop, callbacks).

torch runs 1 thread (--threads). cProfile's own overhead lands mostly on Python-heavy parts
(PIL transforms, Lightning hooks), so those shares are upper bounds. Writes
experiments/results/trial_cost.{json,md}.

    nice -n 10 python experiments/bench_trial_cost.py [--epochs 10] [--candidate 0]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from gpunet.files import write_json, write_text
from gpunet.paths import CONF_DIR
from gpunet.space.encoding import encoding_to_spec
from gpunet.space.search_space import space_from_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CANDIDATES = ROOT / "outputs" / "bench_data_signal" / "candidates.json"

IMPORTS = """
import time
cpu, wall = time.process_time(), time.perf_counter()
import torch
t_torch = time.process_time() - cpu
import lightning, timm, hydra
t_libs = time.process_time() - cpu
import gpunet.search.job, gpunet.train.run
t_all = time.process_time() - cpu
from hydra import compose, initialize_config_dir
from gpunet.paths import CONF_DIR
c0 = time.process_time()
with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
    compose("search", overrides=["data=digits"])
print(t_torch, t_libs, t_all, time.perf_counter() - wall, time.process_time() - c0)
"""

# (part, function name as pstats keys it: (file suffix, function)); cumulative CPU time of each
DATA = "train data: dataset __getitem__ (PIL, timm transforms)"
PARTS = {
    DATA: ("gpunet/train/data.py", "__getitem__"),
    "data: collate (training and validation)": ("torch/utils/data/_utils/collate.py", "default_collate"),
    "train: forward + loss (training_step)": ("gpunet/train/module.py", "training_step"),
    "train: backward": ("torch/_tensor.py", "backward"),
    "train: optimizer update (RMSpropTF)": ("timm/optim/rmsprop_tf.py", "rmsprop_tf"),
    "train: lr schedule": ("gpunet/train/module.py", "lr_scheduler_step"),
    "validation: forward + metrics (validation_step)": ("gpunet/train/module.py", "validation_step"),
    "checkpoint: save last.ckpt": ("lightning/pytorch/trainer/trainer.py", "save_checkpoint"),
    "loggers: CSV save": ("lightning/fabric/loggers/csv_logs.py", "save"),
}
WHOLE = ("gpunet/train/run.py", "fit")
VALIDATION_LOOP = ("lightning/pytorch/loops/evaluation_loop.py", "run")


def cumulative(stats: pstats.Stats, key: tuple[str, str]) -> float:
    """Cumulative seconds of every function matching (file suffix, name), not counting recursion."""
    suffix, name = key
    return sum(v[3] for (file, _, func), v in stats.stats.items()
               if func == name and file.endswith(suffix))


def imports() -> dict:
    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    t_torch, t_libs, t_all, wall, compose_s = map(float, out.stdout.split()[-5:])
    return {"import_torch_cpu_s": t_torch, "import_torch_lightning_timm_hydra_cpu_s": t_libs,
            "import_all_cpu_s": t_all, "import_wall_s": wall, "compose_config_cpu_s": compose_s}


def profile_trial(candidate: int, epochs: int | None, seed: int) -> dict:
    from gpunet.train.run import fit_candidate

    overrides = ["data=digits", f"seed={seed}", "trainer.enable_progress_bar=false"]
    if epochs:
        overrides.append(f"recipe.epochs={epochs}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=overrides)
    encoding = json.loads(CANDIDATES.read_text())["encodings"][candidate]
    spec = encoding_to_spec(space_from_config(cfg.search_space), encoding)
    profiler = cProfile.Profile(time.process_time)
    with tempfile.TemporaryDirectory() as tmp:
        wall = time.perf_counter()
        profiler.enable()
        result = fit_candidate(cfg, spec, Path(tmp))
        profiler.disable()
        wall = time.perf_counter() - wall
        ckpt_bytes = (Path(tmp) / "last.ckpt").stat().st_size
    stats = pstats.Stats(profiler)
    total = cumulative(stats, WHOLE)
    parts = {name: cumulative(stats, key) for name, key in PARTS.items()}
    # __getitem__ serves training and validation alike: split it by the images each loop read
    getitem = next(v for (f, _, func), v in stats.stats.items()
                   if func == "__getitem__" and f.endswith(PARTS[DATA][0]))
    train_images = trainer_images(cfg, spec)
    per_image = getitem[3] / getitem[1]
    parts[DATA] = per_image * train_images
    parts["validation: whole loop, its data included"] = cumulative(stats, VALIDATION_LOOP)
    parts.pop("validation: forward + metrics (validation_step)")
    parts["other: Lightning's loop, callbacks, setup"] = total - sum(parts.values())
    return {"candidate": candidate, "resolution": spec.resolution, "epochs": int(cfg.recipe.epochs),
            "train_images_read": train_images, "images_read": getitem[1], "data_ms_per_image":
            1e3 * per_image, "best_top1": result.best_top1, "curve": result.curve, "total_cpu_s": total,
            "wall_s": wall, "checkpoint_bytes": ckpt_bytes, "parts_cpu_s": parts}


def trainer_images(cfg, spec) -> int:
    """Images the training loop reads: every epoch's full batches (the last partial one dropped)."""
    from gpunet.train.data import build_datamodule

    dm = build_datamodule(cfg.data, cfg.recipe, spec.resolution)
    return int(cfg.recipe.epochs) * (len(dm.train) // int(cfg.recipe.batch_size)) * int(cfg.recipe.batch_size)


def report(out: dict) -> str:
    imp, trial = out["imports"], out["trial"]
    total = trial["total_cpu_s"]
    rows = [f"| {k} | {v:.1f} | {100 * v / total:.0f}% |" for k, v in trial["parts_cpu_s"].items()]
    return "\n".join([
        "# Where one trial's time goes (issue 11, item 2)", "",
        f"Default search config (data=digits, recipe=proxy, {trial['epochs']} epochs, batch 64), "
        f"candidate {trial['candidate']} of the bench_data_signal candidates ({trial['resolution']} px), "
        f"torch 1 thread, CPU seconds under cProfile (timer: process time). Load average at start: "
        f"{out['load_before']}; wall {trial['wall_s']:.0f} s for {total:.0f} CPU s.", "",
        "| part | CPU s | share of fit |", "|---|---|---|", *rows,
        f"| **fit_candidate total** | **{total:.1f}** | 100% |", "",
        "Process start (fresh interpreter, CPU s, cumulative): import torch "
        f"{imp['import_torch_cpu_s']:.1f}; with lightning, timm, hydra "
        f"{imp['import_torch_lightning_timm_hydra_cpu_s']:.1f}; with gpunet.search.job and "
        f"gpunet.train.run {imp['import_all_cpu_s']:.1f} (wall {imp['import_wall_s']:.1f}); composing "
        f"the search config {imp['compose_config_cpu_s']:.1f}.", "",
        f"last.ckpt: {trial['checkpoint_bytes'] / 1e6:.1f} MB, written every epoch.", "",
        "## What each lever would save (estimates from the table, per trial)", "", *levers(out), ""])


def levers(out: dict) -> list[str]:
    """Each lever's saving, as a share of fit_candidate's CPU time, from the measured parts."""
    trial, imp = out["trial"], out["imports"]
    parts, total = trial["parts_cpu_s"], trial["total_cpu_s"]
    compute = sum(v for k, v in parts.items() if k.startswith("train:"))
    data = parts[DATA]
    per_epoch = total - parts["other: Lightning's loop, callbacks, setup"]
    res = trial["resolution"]
    small = 32 if res > 32 else res // 2

    def pct(x: float) -> str:
        return f"{x:.1f} CPU s ({100 * x / total:.0f}%)"

    return [
        f"- Half the epochs (or half the images per epoch): about half of everything but setup: "
        f"{pct(per_epoch / 2)}.",
        f"- Training at {small} px instead of the candidate's {res} px (forward/backward scale with "
        f"the pixels): {pct(compute * (1 - (small / res) ** 2))}, and part of the data cost.",
        f"- In-memory uint8 tensors augmented per batch instead of per-image PIL + timm transforms "
        f"({trial['data_ms_per_image']:.2f} ms per image under cProfile): at most {pct(data)}.",
        f"- last.ckpt only at the end instead of every epoch: "
        f"{pct(parts['checkpoint: save last.ckpt'] * (1 - 1 / trial['epochs']))} (a killed trial "
        "then restarts from scratch).",
        f"- Validation every other epoch: {pct(parts['validation: whole loop, its data included'] / 2)} "
        "(median stopping reads every epoch's top-1, so it would need changing too).",
        f"- Process start: importing torch, Lightning, timm, Hydra and gpunet costs "
        f"{imp['import_all_cpu_s']:.1f} CPU s per process (wall {imp['import_wall_s']:.0f} s on this "
        "loaded machine): the default (basic) launcher runs every trial in the search's own process, "
        "so it is paid once per search; a launcher that starts a process per trial pays it per trial.",
        "- ONNX export: not part of a trial (only the search's best network is exported, once, at the end).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="recipe.epochs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {"load_before": os.getloadavg(), "imports": imports(),
           "trial": profile_trial(args.candidate, args.epochs, args.seed),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    write_json(RESULTS / "trial_cost.json", out)
    text = report(out)
    write_text(RESULTS / "trial_cost.md", text)
    print(text)


if __name__ == "__main__":
    main()
