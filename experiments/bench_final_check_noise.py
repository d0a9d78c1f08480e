"""How much one final-check measurement of a network moves on this machine, right after load.

A search's final check times its most accurate networks once, seconds after the last training,
and compares each with the tier's edge. Here a finished search's top networks are timed as the
final check times them (gpunet.latency.end_to_end, 5 interleaved rounds, at the table's speed)
in --series series; each series first loads both cores for --load seconds (two processes of
matrix products, as two trainings would), then takes --repeats measurements back to back.
Reported: per network, the range of all its measurements and of the series' medians.

Run alone, in the directory whose outputs/latency table the search used:

    cd /tmp/mr && python /work/main/experiments/bench_final_check_noise.py \\
        outputs/search/cpu-cpu-onnxruntime-1ms-train-lamcts_bo-s0

Writes experiments/results/final_check_noise.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from gpunet.files import write_json, write_text
from gpunet.search.final_check import ranked
from gpunet.search.journal import Journal
from gpunet.search.outputs import OutputSettings, _network

RESULTS = Path(__file__).resolve().parent / "results"
LOAD = ("import time, torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nt = time.time()\n"
        "while time.time() - t < {seconds}:\n    a @ a\n")


def load_both_cores(seconds: float) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", LOAD.format(seconds=seconds)]) for _ in range(2)]
    for proc in procs:
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search", type=Path, help="a finished search's directory")
    parser.add_argument("--top", type=int, default=5, help="the final check's top networks timed")
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load", type=float, default=60.0, help="seconds of load before each series")
    args = parser.parse_args()
    settings = OutputSettings.from_config(OmegaConf.load(args.search / "search.yaml"))
    trials = ranked(list(Journal(args.search / "journal.jsonl").load().values()))[:args.top]
    specs = [_network(t, settings) for t in trials]
    rounds = settings.final.rounds
    settings.measure(specs, 1)  # sessions and imports warm, as in a search's process
    series = []
    for _ in range(args.series):
        load_both_cores(args.load)
        start, runs = time.time(), []
        for _ in range(args.repeats):
            result = settings.measure(specs, rounds)
            runs.append({"after_s": round(time.time() - start, 1), "speed": result.speed,
                         "ms": result.ms, "at_table_speed": result.at_table_speed})
            print(runs[-1], flush=True)
        series.append(runs)
    result = {"search": str(args.search), "trials": [t.number for t in trials], "edge_ms": settings.band[1],
              "rounds": rounds, "load_s": args.load, "series": series}
    write_json(RESULTS / "final_check_noise.json", result)
    write_text(RESULTS / "final_check_noise.md", report(result))


def report(result: dict) -> str:
    table = np.array([[run["at_table_speed"] for run in runs] for runs in result["series"]])  # S x R x N
    medians = np.median(table, axis=1)  # S x N
    lines = [
        "# One final-check measurement, right after load: how much it moves",
        "",
        f"The top {len(result['trials'])} networks of {result['search']} (trials {result['trials']}; "
        f"tier edge {result['edge_ms']:.3f} ms), timed as the final check does ({result['rounds']} "
        f"interleaved rounds, at the table's speed) in {table.shape[0]} series of {table.shape[1]} "
        f"measurements back to back, each series after {result['load_s']:g} s of load on both cores.",
        "",
        "| trial | all measurements (ms) | series medians (ms) | measurements above the edge |",
        "|---|---|---|---|",
    ]
    for i, trial in enumerate(result["trials"]):
        values, above = table[:, :, i], int((table[:, :, i] > result["edge_ms"]).sum())
        lines.append(f"| {trial} | {values.min():.3f}-{values.max():.3f} | {medians[:, i].min():.3f}-"
                     f"{medians[:, i].max():.3f} | {above} of {values.size} |")
    ratio = table[:, 0, :] / np.median(table[:, 1:, :], axis=1)
    lines += ["", "First measurement of a series against the median of the rest, per network and series: "
              f"ratio {np.median(ratio):.3f} (median), {ratio.min():.3f}-{ratio.max():.3f}.",
              "", "Produced by `experiments/bench_final_check_noise.py` (see its docstring)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
