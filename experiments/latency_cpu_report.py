"""The CPU space's latency table on this machine: build time, fidelity and tiers.

    python experiments/latency_cpu_report.py [--tag cpu] [--keep-table] [hydra overrides ...]

1. builds the whole table of `search_space=cpu` from scratch with the default onnxruntime backend
   (1 thread, one worker) and times it;
2. runs the fidelity check (gpunet.latency.validate) on `validate.networks` Sobol networks;
3. samples 1,000,000 networks and counts every tier's pool (gpunet.latency.stratify).
Writes experiments/results/latency_{build,fidelity,tiers}_<tag>.* . The head is sized for the
digits data (latency.num_classes=10) unless overridden. The machine's load average is recorded
with each step, since the 2 cores are shared with other jobs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from gpunet.files import write_json, write_text
from gpunet.latency.build import LatencySetup, build_table
from gpunet.latency.stratify import stratify_app
from gpunet.latency.validate import validate_app
from gpunet.paths import CONF_DIR
from gpunet.space import space_from_config

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="cpu", help="suffix of the output files")
    parser.add_argument("--keep-table", action="store_true", help="re-use an existing table (no timing)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/latency_apps.yaml")
    args = parser.parse_args()
    defaults = ["search_space=cpu", "latency.num_classes=10", "validate.networks=60",
                "latency.table=outputs/latency/report-${search_space.name}-${latency.name}.sqlite",
                f"validate.prefix=latency_fidelity_{args.tag}", f"stratify.prefix=latency_tiers_{args.tag}"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("latency_apps", overrides=[*defaults, *args.overrides])
    setup = LatencySetup.from_config(cfg)
    path = setup.table_path
    if not args.keep_table:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    steps = {}
    load = os.getloadavg()
    start = time.perf_counter()
    report = build_table(setup, space_from_config(cfg.search_space))
    steps["build"] = {**report.summary(), "wall_s": round(time.perf_counter() - start, 1),
                      "load_average_before": load, "load_average_after": os.getloadavg()}
    load, start = os.getloadavg(), time.perf_counter()
    fidelity = validate_app(cfg, RESULTS)
    steps["validate"] = {"wall_s": round(time.perf_counter() - start, 1), "load_average_before": load,
                         "load_average_after": os.getloadavg(), "kendall_tau": fidelity.kendall_tau,
                         "calibrated_mape_pct": fidelity.calibrated_mape_pct,
                         "calibrated_loo_mape_pct": fidelity.calibrated_loo_mape_pct}
    load, start = os.getloadavg(), time.perf_counter()
    tiers = stratify_app(cfg, RESULTS)
    steps["stratify"] = {"wall_s": round(time.perf_counter() - start, 1), "load_average_before": load,
                         "load_average_after": os.getloadavg(), "tiers": tiers["tiers"],
                         "range_ms": tiers["range_ms"]}
    write_json(RESULTS / f"latency_build_{args.tag}.json",
               {"overrides": [*defaults, *args.overrides], "cores": os.cpu_count(), **steps})
    b = steps["build"]
    lines = [
        f"# Latency table of search space `{cfg.search_space.name}` on this machine ({args.tag})",
        "",
        f"Context: {report.table.context}",
        "",
        f"* Build from scratch: {b['keys']:,} entries in {b['seconds']:.0f} s of measuring "
        f"({b['entries_per_minute']:,.0f} entries/min) with {cfg.latency.workers} worker, "
        f"{cfg.latency.runs} timed runs after {cfg.latency.warmup} warm-up runs each; "
        f"{b['wall_s']:.0f} s wall including enumeration. Load average (1 min) "
        f"{b['load_average_before'][0]:.1f} before, {b['load_average_after'][0]:.1f} after, on "
        f"{os.cpu_count()} cores shared with other jobs."
        if not args.keep_table else "* Table re-used (build not timed).",
        f"* Fidelity ({fidelity.networks} networks): Kendall tau {fidelity.kendall_tau:.3f}, Pearson r "
        f"{fidelity.pearson_r:.3f}, MAPE {fidelity.mape_pct:.1f} %, "
        f"mean bias {fidelity.mean_bias_pct:+.1f} %, "
        f"calibrated MAPE {fidelity.calibrated_mape_pct:.2f} % (leave-one-out "
        f"{fidelity.calibrated_loo_mape_pct:.2f} %); see latency_fidelity_{args.tag}.md/.png.",
        f"* Tiers over {tiers['samples']:,} Sobol samples (estimates {tiers['range_ms'][0]:.2f}-"
        f"{tiers['range_ms'][1]:.2f} ms): "
        + ", ".join(f"{name} {t['networks']:,}" for name, t in tiers["tiers"].items())
        + f"; see latency_tiers_{args.tag}.png.",
        "",
    ]
    write_text(RESULTS / f"latency_build_{args.tag}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
