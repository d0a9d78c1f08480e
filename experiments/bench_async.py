"""Synchronous rounds vs asynchronous steady state, on a real launcher (issue 10, item 5).

Each search is a real `python -m gpunet.search` on the CPU space's 1 ms tier with 4 joblib
workers and 64 trials. The objective is Ackley, but each candidate's evaluation sleeps for a
heavy-tailed time fixed per candidate (lognormal seconds, like trainings under early stopping),
so a synchronous round waits for its slowest job. For each mode and seed it reports the wall
time, the worker utilisation (busy worker-seconds / (workers x wall), counted from the first
job's start to the last result) and the best value after every evaluation; it draws the worker
timelines (Gantt) and the best-so-far curves. Writes experiments/results/async_schedule.*.

    python experiments/bench_async.py                 # 3 seeds x {sync, async}: ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MEDIAN_S, SIGMA = 5.0, 0.6  # lognormal durations: median 5 s, p90 about 11 s (real trials: minutes)
TARGET_UTILISATION = 0.90


def duration_s(encoding: list[int]) -> float:
    """A lognormal duration fixed per candidate (a hash of its encoding, not of the run)."""
    digest = hashlib.sha256(",".join(map(str, encoding)).encode()).digest()
    z = np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal()
    return float(MEDIAN_S * np.exp(SIGMA * z))


def slow_ackley(encoding: list[int], cardinalities: np.ndarray) -> float:
    """The search's objective (`objective._target_`): Ackley, after sleeping duration_s."""
    from gpunet.search.objectives import make_objective

    time.sleep(duration_s(encoding))
    return float(make_objective("ackley", cardinalities)(np.asarray([encoding]))[0])


def run_search(out_dir: Path, asynchronous: bool, seed: int, args: argparse.Namespace) -> Path:
    sweep = out_dir / f"{'async' if asynchronous else 'sync'}-s{seed}"
    cmd = [sys.executable, "-m", "gpunet.search", "objective=ackley",
           "++objective._target_=bench_async.slow_ackley", f"searcher={args.searcher}",
           f"hydra/launcher={args.launcher}", f"hydra.launcher.n_jobs={args.workers}",
           f"search.n_trials={args.trials}", f"search.asynchronous={str(asynchronous).lower()}",
           f"seed={seed}", f"hydra.sweep.dir={sweep}", "hub.add=false"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return sweep


def trials_of(sweep: Path) -> list[dict]:
    """Finished trials in the order their results arrived (the journal's order)."""
    latest, order = {}, []
    for line in (sweep / "journal.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "search" in record:
            continue
        latest[record["number"]] = record
        if record["status"] == "completed":
            order.append(record["number"])
    return [latest[n] for n in order]


def schedule_figures(trials: list[dict], workers: int) -> dict:
    starts = np.array([t["extra"]["started_at"] for t in trials])
    ends = np.array([t["extra"]["ended_at"] for t in trials])
    wall = float(ends.max() - starts.min())
    values = np.array([t["value"] for t in trials])
    return {"wall_s": round(wall, 1), "busy_s": round(float((ends - starts).sum()), 1),
            "utilisation": round(float((ends - starts).sum() / (workers * wall)), 3),
            "best": float(values.max()), "best_so_far": np.maximum.accumulate(values).tolist()}


def lanes(trials: list[dict]) -> dict[int, int]:
    """A worker lane per trial for the timeline: the first lane free when its job starts."""
    free_at: list[float] = []
    lane_of = {}
    for t in sorted(trials, key=lambda t: t["extra"]["started_at"]):
        start = t["extra"]["started_at"]
        lane = next((i for i, free in enumerate(free_at) if free <= start + 1e-3), len(free_at))
        if lane == len(free_at):
            free_at.append(0.0)
        free_at[lane] = t["extra"]["ended_at"]
        lane_of[t["number"]] = lane
    return lane_of


def plot_timelines(runs: dict[str, list[dict]], path: Path) -> None:
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 1.6 + 1.2 * len(runs)), sharex=True)
    for ax, (label, trials) in zip(np.atleast_1d(axes), runs.items()):
        t0 = min(t["extra"]["started_at"] for t in trials)
        lane_of = lanes(trials)
        for t in trials:
            lane = lane_of[t["number"]]
            start, end = t["extra"]["started_at"] - t0, t["extra"]["ended_at"] - t0
            ax.barh(lane, end - start, left=start, height=0.8, color=f"C{t['number'] % 10}",
                    edgecolor="k", linewidth=0.3)
        ax.set(ylabel="worker", title=label)
        ax.set_yticks([])
    np.atleast_1d(axes)[-1].set_xlabel("seconds since the first job started")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_best(curves: dict[str, list[list[float]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (mode, runs) in enumerate(curves.items()):
        n = min(len(c) for c in runs)
        data = np.array([c[:n] for c in runs])
        x = np.arange(1, n + 1)
        ax.plot(x, np.median(data, axis=0), color=f"C{i}", label=f"{mode} (median)")
        ax.fill_between(x, data.min(axis=0), data.max(axis=0), color=f"C{i}", alpha=0.2)
    ax.set(xlabel="evaluations (in order of arrival)", ylabel="best Ackley value so far",
           title="Best so far: synchronous rounds vs asynchronous")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--searcher", default="lamcts_bo")
    parser.add_argument("--launcher", default="gpunet_joblib", choices=["gpunet_joblib", "joblib"],
                        help="gpunet_joblib (device=cpu's default) or Hydra's own joblib launcher")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[int, dict]] = {"sync": {}, "async": {}}
    timelines: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for mode in ("sync", "async"):
                start = time.time()
                trials = trials_of(run_search(Path(tmp), mode == "async", seed, args))
                figures[mode][seed] = schedule_figures(trials, args.workers)
                print(f"{mode} seed {seed}: {figures[mode][seed]['wall_s']} s wall, utilisation "
                      f"{figures[mode][seed]['utilisation']}, best {figures[mode][seed]['best']:.4f} "
                      f"({time.time() - start:.0f} s with start-up)", flush=True)
                if seed == args.seeds[0]:
                    timelines[f"{mode}, seed {seed}"] = trials
    plot_timelines(timelines, args.out / "async_schedule_timelines.png")
    plot_best({m: [f["best_so_far"] for f in runs.values()] for m, runs in figures.items()},
              args.out / "async_schedule_best_so_far.png")
    summary = {mode: {"median_wall_s": float(np.median([f["wall_s"] for f in runs.values()])),
                      "median_utilisation": float(np.median([f["utilisation"] for f in runs.values()])),
                      "median_best": float(np.median([f["best"] for f in runs.values()]))}
               for mode, runs in figures.items()}
    result = {"setting": {"workers": args.workers, "trials": args.trials, "seeds": args.seeds,
                          "searcher": args.searcher, "launcher": args.launcher,
                          "durations": f"lognormal, median {MEDIAN_S} s, sigma {SIGMA}, fixed per candidate",
                          "objective": "ackley (cpu space, 1ms tier)", "cpus": os.cpu_count()},
              "summary": summary,
              "runs": {m: {str(s): {k: v for k, v in f.items() if k != "best_so_far"}
                           for s, f in runs.items()} for m, runs in figures.items()}}
    (args.out / "async_schedule.json").write_text(json.dumps(result, indent=2))
    lines = ["# Synchronous rounds vs asynchronous steady state", "",
             f"{args.workers} workers of hydra/launcher={args.launcher}, {args.trials} trials, "
             f"searcher {args.searcher}, "
             f"seeds {args.seeds}; {result['setting']['durations']}; Ackley over the CPU space's 1 ms "
             "tier. Utilisation = busy worker-seconds / (workers x wall), wall from the first job's "
             "start to the last result. Written by experiments/bench_async.py.", "",
             "| mode | seed | wall (s) | utilisation | best after all trials |", "|---|---|---|---|---|"]
    for mode, runs in figures.items():
        for seed, f in runs.items():
            lines.append(f"| {mode} | {seed} | {f['wall_s']} | {f['utilisation']:.3f} | {f['best']:.4f} |")
    lines += ["", "| mode | median wall (s) | median utilisation | median best |", "|---|---|---|---|"]
    for mode, s in summary.items():
        lines.append(f"| {mode} | {s['median_wall_s']:.1f} | {s['median_utilisation']:.3f} | "
                     f"{s['median_best']:.4f} |")
    met = summary["async"]["median_utilisation"] >= TARGET_UTILISATION
    no_worse = summary["async"]["median_best"] >= summary["sync"]["median_best"]
    lines += ["", f"Target utilisation >= {TARGET_UTILISATION:.0%} asynchronous: "
              f"{'met' if met else 'missed'}; best after {args.trials} evaluations no worse than "
              f"synchronous (median): {'met' if no_worse else 'missed'}.", "",
              "![timelines](async_schedule_timelines.png)", "",
              "![best so far](async_schedule_best_so_far.png)", ""]
    (args.out / "async_schedule.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
