"""Does a latency tier hold by measurement? The table's estimate against end-to-end latency,
tier by tier, for the tiers' random members and for what searches picked.

A tier is defined by the latency table's sum over a network's layers (gpunet.latency.estimate);
`python -m gpunet.latency.validate` checks that sum on Sobol networks of the whole space, which
are mostly small (on the CPU space few reach 1.2 ms). Here every tier of the search space gets
its own random members (from the search's own tier pools), and each search directory given
with --searches adds its trials (random start and the model's picks apart: a search favours
networks whose estimate is low for what they are). All are timed end to end in interleaved
rounds beside a sample of their own layers (gpunet.latency.end_to_end), so each latency is at
the table's speed, the figure a tier's edge is compared with; --repeats such runs, median.

Then the calibration `python -m gpunet.latency.validate` fitted until 2026-12-02 (end to end ~=
a * sum + b * #entries + c) is refitted on these networks, leave-one-out, beside one with a term
for the square of the sum and the one it fits now, with a term for the network's weights (a layer
timed alone keeps its weights in cache, a whole network of several MB streams them), to see
whether the error left depends on the tier. When the table holds a calibration, each group's
measurements are also compared with its estimate ("stored calibration").

Run alone, in the directory whose outputs/latency table and pools the searches used:

    python experiments/bench_tier_fidelity.py --root /tmp/mr \\
        --searches /tmp/mr/outputs/search/cpu-cpu-onnxruntime-{1ms,2ms}-train-lamcts_bo-s0

Writes experiments/results/tier_fidelity.{json,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from gpunet.files import save_figure, write_json, write_text  # noqa: E402
from gpunet.latency.build import LatencySetup, ensure_table  # noqa: E402
from gpunet.latency.end_to_end import measure_end_to_end  # noqa: E402
from gpunet.latency.estimate import estimate_encodings, sum_encodings  # noqa: E402
from gpunet.latency.validate import leave_one_out  # noqa: E402
from gpunet.paths import CONF_DIR  # noqa: E402
from gpunet.search.loop import load_tier_pool  # noqa: E402
from gpunet.space import space_from_config  # noqa: E402
from gpunet.space.encoding import encoding_to_spec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def config(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("search", overrides=list(overrides))


def search_trials(directory: Path) -> list[tuple[str, list[int]]]:
    """(group, encoding) of every trial of a finished search; the group names its tier, whether
    its tier was by the calibrated estimate, and who proposed the trial."""
    cfg = yaml.safe_load((directory / "search.yaml").read_text())
    tier = f"{float(cfg['tier']['target_ms']):g}ms" + (" calibrated" if cfg["latency"]["calibrated"] else "")
    with open(directory / "results.csv") as f:
        return [(f"{tier} {row['proposer']}", [int(x) for x in row["encoding"].split("-")])
                for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="where outputs/latency lives")
    parser.add_argument("--tiers", nargs="+", default=["0.5ms", "1ms", "1.5ms", "2ms"])
    parser.add_argument("--per-tier", type=int, default=12, help="random members of each tier")
    parser.add_argument("--searches", nargs="*", type=Path, default=[], help="search directories")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="tier_fidelity")
    args = parser.parse_args()
    searches = [s.resolve() for s in args.searches]
    os.chdir(args.root)
    rng = np.random.default_rng(args.seed)
    groups: list[str] = []
    encodings: list[list[int]] = []
    edges: dict[str, tuple[float, float]] = {}  # each tier's band (ms)
    for tier in args.tiers:
        pool = load_tier_pool(config(f"tier={tier}"))
        edges[tier] = pool.tier.band
        for row in rng.choice(len(pool.encodings), size=args.per_tier, replace=False):
            groups.append(f"{tier} pool")
            encodings.append([int(x) for x in pool.encodings[row]])
    for directory in searches:
        for group, encoding in search_trials(directory):
            groups.append(group)
            encodings.append(encoding)
    cfg = config()
    space, setup = space_from_config(cfg.search_space), LatencySetup.from_config(cfg)
    table = ensure_table(setup, space)  # complete: the searches built it
    X = np.array(encodings)
    sums = sum_encodings(space, table, X, setup.num_classes)
    estimate, entries, mparams = sums.total_ns / 1e6, sums.entries, sums.params / 1e6
    specs = [encoding_to_spec(space, x, setup.num_classes) for x in encodings]
    weights_mb = sums.params * 4 / 2**20  # fp32 parameters
    runs = [measure_end_to_end(specs, setup, args.rounds) for _ in range(args.repeats)]
    measured = np.median([r.at_table_speed for r in runs], axis=0)
    ratio = measured / estimate
    stored = table.calibration()  # `python -m gpunet.latency.validate`'s fit, if it ran on this table
    calibrated = None if stored is None else estimate_encodings(space, table, X, setup.num_classes,
                                                                calibrated=True)
    designs = {
        "a*sum + b*entries + c (validate's before)": np.column_stack([estimate, entries,
                                                                     np.ones_like(estimate)]),
        "+ d*sum^2": np.column_stack([estimate, entries, np.ones_like(estimate), estimate**2]),
        "+ d*Mparams (validate's now)": np.column_stack([estimate, entries, np.ones_like(estimate),
                                                         mparams]),
    }
    loo = {name: leave_one_out(A, measured) for name, A in designs.items()}
    order = list(dict.fromkeys(groups))
    rows = []
    for group in order:
        at = np.array([g == group for g in groups])
        tier = group.split()[0]
        edge = edges.get(tier, (None, None))[1]
        rows.append({
            "group": group, "networks": int(at.sum()),
            "estimate_ms": [float(np.min(estimate[at])), float(np.max(estimate[at]))],
            "ratio_median": float(np.median(ratio[at])),
            "ratio_range": [float(ratio[at].min()), float(ratio[at].max())],
            "above_edge": None if edge is None else int((measured[at] > edge).sum()),
            "weights_mb_median": float(np.median(weights_mb[at])),
            "stored_calibration_ratio": None if calibrated is None else
            float(np.median(measured[at] / calibrated[at])),
            "above_edge_by_stored_calibration_estimate": None if calibrated is None or edge is None else
            int((calibrated[at] > edge).sum()),
            "loo_error_pct": {name: float(100 * np.median((p[at] - measured[at]) / measured[at]))
                              for name, p in loo.items()},
        })
    out = {"root": str(args.root), "table": str(table.path), "context": table.context,
           "stored_calibration": None if stored is None else asdict(stored),
           "speeds": [r.speed for r in runs], "rounds": args.rounds, "repeats": args.repeats,
           "rows": rows, "networks": [{"group": g, "encoding": e, "estimate_ms": float(s),
                                       "measured_ms": float(m), "weights_mb": float(w)}
                                      for g, e, s, m, w in zip(groups, encodings, estimate, measured,
                                                               weights_mb)]}
    write_json(RESULTS / f"{args.name}.json", out)
    write_text(RESULTS / f"{args.name}.md", report(out, list(designs)))
    plot(groups, estimate, measured, edges, RESULTS / f"{args.name}.png")
    print(report(out, list(designs)))


def report(out: dict, designs: list[str]) -> str:
    speeds = ", ".join(f"{s:.2f}" for s in out["speeds"])
    lines = [
        "# Does a tier hold by measurement? Estimate vs end to end, tier by tier",
        "",
        f"Table: `{out['table']}` ({out['context'].get('backend')} on {out['context'].get('device')}, "
        f"{out['context'].get('hardware')}). Every network timed end to end in {out['rounds']} "
        f"interleaved rounds beside 24 of its layers, {out['repeats']} such runs (the machine ran "
        f"{speeds}x the table's times); latency = median of the runs' figures at the table's speed. "
        "ratio = measured / estimate. 'loo error': the calibration refitted on all these networks "
        "without the one predicted (leave-one-out), median signed error of the group.",
        "",
        "| group | networks | estimate (ms) | measured / estimate: median | range | above the tier's edge "
        "| weights (MB, median) | " + " | ".join(f"loo error, {d}" for d in designs) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(designs),
    ]
    cal = out["stored_calibration"]
    if cal is not None:
        lines[2] += (f" 'stored calibration': the table's own (`python -m gpunet.latency.validate`, "
                     f"{cal['networks']} networks): end to end ~= {cal['a']:.4f} x sum + {cal['b']:.5f} ms x "
                     f"entries + {cal['c']:.4f} ms + {cal.get('d', 0.0):.4f} ms x million parameters; "
                     "measured / that estimate, median.")
        lines[4] += " measured / stored calibration's estimate |"
        lines[5] += "---|"
    for r in out["rows"]:
        above = "" if r["above_edge"] is None else f"{r['above_edge']} of {r['networks']}"
        lines.append(
            f"| {r['group']} | {r['networks']} | {r['estimate_ms'][0]:.2f}-{r['estimate_ms'][1]:.2f} | "
            f"{r['ratio_median']:.3f} | {r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f} | {above} | "
            f"{r['weights_mb_median']:.1f} | "
            + " | ".join(f"{r['loo_error_pct'][d]:+.1f}%" for d in designs) + " |"
            + ("" if cal is None else f" {r['stored_calibration_ratio']:.3f} |"))
    lines += ["", "Produced by `experiments/bench_tier_fidelity.py` (see its docstring)."]
    return "\n".join(lines) + "\n"


def plot(groups: list[str], estimate: np.ndarray, measured: np.ndarray,
         edges: dict[str, tuple[float, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    for group in dict.fromkeys(groups):
        at = np.array([g == group for g in groups])
        marker = "o" if group.endswith("pool") else ("^" if "model" in group else "s")
        ax.scatter(estimate[at], measured[at], s=18, marker=marker, label=group, alpha=0.8)
    top = float(max(estimate.max(), measured.max())) * 1.05
    ax.plot([0, top], [0, top], color="grey", lw=1, label="measured = estimate")
    for lo, hi in edges.values():
        ax.axhspan(lo, hi, color="grey", alpha=0.06)
    ax.set_xlabel("latency-table estimate (ms)")
    ax.set_ylabel("end to end at the table's speed (ms)")
    ax.set_title("Tiers by estimate vs by measurement (bands: the tiers)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)
    print(f"plot: {path} (median of {statistics.median(measured / estimate):.3f} measured/estimate)")


if __name__ == "__main__":
    main()
