"""How steady is a network's latency "at the table's speed" from one run to the next, and which
speed reference makes it steadiest?

The final check (gpunet.latency.end_to_end) divides each network's end-to-end time by the
machine's speed against the table: the median ratio of 24 of the networks' own layers timed now
to their stored timings. Here the final check's networks of finished searches are timed again
and again (--runs runs, --pause seconds apart, each 5 interleaved rounds beside every one of
their layers), and the run-to-run spread of each network (max / min over the runs, median over
the networks) is compared for: the raw times; divided by the speed of 24 layers (what the final
check does); of all the layers; of the layers' summed time; and of each network's own layers
summed.

Run alone, in the directory whose outputs/latency table the searches used:

    python experiments/bench_speed_reference.py --root /tmp/mr \\
        --searches /tmp/mr/outputs/search/cpu-cpu-onnxruntime-{1ms,2ms}-train-lamcts_bo-s0

Writes experiments/results/speed_reference.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import yaml
from hydra import compose, initialize_config_dir

from gpunet.files import write_json, write_text
from gpunet.latency.backends import create_backend
from gpunet.latency.backends.base import time_interleaved
from gpunet.latency.build import LatencySetup
from gpunet.latency.end_to_end import REFERENCE_ENTRIES
from gpunet.latency.keys import spec_probes
from gpunet.latency.table import LatencyTable
from gpunet.paths import CONF_DIR
from gpunet.space import space_from_config
from gpunet.space.encoding import encoding_to_spec

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCES = {"raw": "none (the times as measured)",
              "speed24": f"median ratio of {REFERENCE_ENTRIES} of their layers (the final check's)",
              "speed_all": "median ratio of all their layers",
              "speed_sum": "summed time of all their layers",
              "own": "each network's own layers, summed"}


def final_check_encodings(directory: Path, top: int) -> list[list[int]]:
    """The encodings of the first `top` networks a finished search's final check timed."""
    best = yaml.safe_load((directory / "best.yaml").read_text())
    with open(directory / "results.csv") as f:
        rows = {int(r["number"]): r["encoding"] for r in csv.DictReader(f)}
    return [[int(x) for x in rows[m["trial"]].split("-")] for m in best["final_check"]["measured"][:top]]


def one_run(specs, setup: LatencySetup, seed: int) -> dict:
    """Every network and every distinct layer of them, 5 interleaved rounds; the speeds."""
    backend = create_backend(setup.latency, setup.device)
    try:
        probes = list({p.key: p for s in specs for p in spec_probes(s)}.values())
        with LatencyTable(setup.table_path, backend.context()) as table:
            stored = {p.key: table.get(p.key).timing.median_ms for p in probes}
        runners = [backend.prepare_network(s) for s in specs] + [
            backend.prepare(p.module().eval(), (backend.batch_size, *p.shape)) for p in probes]
        timings = [t.median_ms for t in time_interleaved(runners, 5, seed)]
    finally:
        backend.close()
    layers = dict(zip(stored, timings[len(specs):]))
    keys = list(layers)
    sample = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))[:REFERENCE_ENTRIES]]
    return {"time": time.strftime("%H:%M:%S"), "raw_ms": timings[:len(specs)],
            "speed24": float(np.median([layers[k] / stored[k] for k in sample])),
            "speed_all": float(np.median([layers[k] / stored[k] for k in layers])),
            "speed_sum": sum(layers.values()) / sum(stored.values()),
            "own": [sum(layers[p.key] for p in spec_probes(s)) / sum(stored[p.key] for p in spec_probes(s))
                    for s in specs]}


def spreads(runs: list[dict]) -> dict[str, float]:
    """Per reference: each network's max / min over the runs at that reference's speed, median."""
    raw = np.array([r["raw_ms"] for r in runs])
    out = {}
    for name in REFERENCES:
        speed = 1.0 if name == "raw" else np.array([np.broadcast_to(r[name], raw.shape[1]) for r in runs])
        corrected = raw / speed
        out[name] = float(np.median(corrected.max(0) / corrected.min(0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="where outputs/latency lives")
    parser.add_argument("--searches", nargs="+", type=Path, required=True, help="finished searches")
    parser.add_argument("--top", type=int, default=3, help="final-check networks per search")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--pause", type=float, default=15.0, help="seconds between runs")
    args = parser.parse_args()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=[
            f"latency.table={args.root / 'outputs/latency/cpu-onnxruntime-fp32-b1.sqlite'}"])
    space, setup = space_from_config(cfg.search_space), LatencySetup.from_config(cfg)
    encodings = [e for d in args.searches for e in final_check_encodings(d, args.top)]
    specs = [encoding_to_spec(space, np.array(e), setup.num_classes) for e in encodings]
    runs = []
    for seed in range(args.runs):
        runs.append(one_run(specs, setup, seed))
        print(f"run {seed}: {runs[-1]['time']}, raw {np.round(runs[-1]['raw_ms'], 3).tolist()}, "
              f"speed24 {runs[-1]['speed24']:.3f}", flush=True)
        if seed + 1 < args.runs:
            time.sleep(args.pause)
    result = {"table": str(setup.table_path), "searches": [str(d) for d in args.searches],
              "encodings": encodings, "runs": runs, "spread": spreads(runs)}
    write_json(RESULTS / "speed_reference.json", result)
    write_text(RESULTS / "speed_reference.md", report(result, args))
    print(report(result, args))


def report(result: dict, args: argparse.Namespace) -> str:
    runs, names = result["runs"], ", ".join(Path(s).name for s in result["searches"])
    lines = ["# Latency at the table's speed: how steady, and with which speed reference", "",
             f"{len(result['encodings'])} networks (the first {args.top} of each search's final check: "
             f"{names}), timed end to end in {len(runs)} runs {args.pause:g} s apart ({runs[0]['time']} "
             f"to {runs[-1]['time']}), each "
             "5 interleaved rounds beside every one of their layers. Spread: each network's max / min over "
             "the runs, median over the networks.", "",
             "| speed reference | spread |", "|---|---|"]
    lines += [f"| {REFERENCES[k]} | {v:.3f} |" for k, v in result["spread"].items()]
    lines += ["", "| run | time | raw ms | speed (24 layers) | speed (all) | speed (summed) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {i} | {r['time']} | {', '.join(f'{m:.3f}' for m in r['raw_ms'])} | {r['speed24']:.3f} | "
              f"{r['speed_all']:.3f} | {r['speed_sum']:.3f} |" for i, r in enumerate(result["runs"])]
    lines += ["", "Produced by `experiments/bench_speed_reference.py` (see its docstring)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
