"""What a finished search leaves in its directory: results.csv, best.yaml, best.onnx, plots.

The best network is chosen by the search's final check (gpunet.search.final_check): its most
accurate networks timed end to end, the most accurate one within the tier by measurement.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from hydra.plugins.launcher import Launcher  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gpunet.files import save_figure, write_text  # noqa: E402
from gpunet.hub.entries import measured_latency  # noqa: E402
from gpunet.latency.stratify import Tier  # noqa: E402
from gpunet.models import build_model, export_onnx, spec_cost  # noqa: E402
from gpunet.search.final_check import (  # noqa: E402
    FinalCheck,
    Measure,
    Measured,
    choose,
    measure_contenders,
    ranked,
)
from gpunet.search.journal import Trial  # noqa: E402
from gpunet.space import SearchSpace, encoding_to_spec, space_from_config  # noqa: E402
from gpunet.space.spec import NetworkSpec  # noqa: E402

log = logging.getLogger(__name__)
CSV_FIELDS = ["number", "job", "status", "proposer", "pool_index", "value", "est_latency_ms",
              "measured_latency_ms", "duration_s", "epochs", "error", "encoding"]
# pool_index empty: beyond the pool; measured_latency_ms: only the final check's contenders


def measured_latencies(best: Mapping[str, Any] | None, field: str = "measured_latency_ms"
                       ) -> dict[int, float]:
    """Trial number -> end-to-end latency (ms) of the final check's contenders, from best.yaml:
    as measured, or with field="at_table_speed_ms" at the latency table's speed."""
    measured = ((best or {}).get("final_check") or {}).get("measured") or []
    return {int(m["trial"]): float(m[field]) for m in measured if m.get(field) is not None}


def result_rows(trials: list[Trial], measured: Mapping[int, float] | None = None) -> list[dict[str, Any]]:
    """One row per trial, the columns of results.csv."""
    measured = measured or {}
    return [{"number": t.number, "job": t.job, "status": t.status, "proposer": t.proposer,
             "pool_index": t.pool_index, "value": t.value,
             "est_latency_ms": round(t.est_latency_ms, 6), "measured_latency_ms": measured.get(t.number),
             "duration_s": t.duration_s, "epochs": t.extra.get("epochs"), "error": t.error,
             "encoding": "-".join(str(x) for x in t.encoding)} for t in trials]


def _csv_text(rows: list[dict[str, Any]], fields: Sequence[str]) -> str:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_results_csv(path: Path, trials: list[Trial], measured: Mapping[int, float] | None = None) -> None:
    write_text(path, _csv_text(result_rows(trials, measured), CSV_FIELDS))


def best_trial(trials: list[Trial]) -> Trial | None:
    """The most accurate trial (the best by value alone, before any latency is measured)."""
    order = ranked(trials)
    return order[0] if order else None


def best_so_far(trials: list[Trial]) -> np.ndarray:
    values = [t.observed_value for t in sorted(trials, key=lambda t: t.number) if t.finished]
    return np.fmax.accumulate(np.array(values, dtype=float)) if values else np.array([])


def plot_convergence(path: Path, trials: list[Trial], metric: str) -> None:
    finished = sorted((t for t in trials if t.finished), key=lambda t: t.number)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(range(1, len(finished) + 1), [t.observed_value for t in finished], s=12,
               alpha=0.5, label="trial")
    ax.plot(range(1, len(finished) + 1), best_so_far(finished), color="C3", label="best so far")
    ax.set(xlabel="trials", ylabel=metric, title="Search convergence")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_latency_vs_value(path: Path, trials: list[Trial], metric: str, band: tuple[float, float] | None,
                          best: Trial | None = None, measured: Mapping[int, float] | None = None) -> None:
    """Every trial at its estimated latency; the final check's contenders also at their measured
    latency (at the table's speed: hollow, joined to their estimate); `best` (default: the most
    accurate) as a star."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for status, color in (("completed", "C0"), ("pruned", "C1"), ("failed", "C3")):
        chosen = [t for t in trials if t.status == status]
        if chosen:
            values = [t.value if t.value is not None and status != "failed" else np.nan
                      for t in chosen]
            ax.scatter([t.est_latency_ms for t in chosen], values, s=14, c=color, label=status)
    by_number = {t.number: t for t in trials}
    for i, (number, ms) in enumerate((measured or {}).items()):
        t = by_number[number]
        ax.plot([t.est_latency_ms, ms], [t.value, t.value], color="k", lw=0.6, alpha=0.6)
        ax.scatter([ms], [t.value], s=30, facecolors="none", edgecolors="k", zorder=3,
                   label="measured (at the table's speed)" if i == 0 else None)
    best = best or best_trial(trials)
    if best is not None:
        x = (measured or {}).get(best.number, best.est_latency_ms)
        ax.scatter([x], [best.value], marker="*", s=200, c="gold", edgecolors="k", label="best", zorder=4)
    if band is not None:
        ax.axvspan(*band, color="grey", alpha=0.15, label="tier")
    ax.set(xlabel="latency (ms): estimated; measured for the best few", ylabel=metric,
           title="Latency vs " + metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


@dataclass(frozen=True)
class OutputSettings:
    """What a search's outputs take from its config, read once at the edge (`from_config`)."""

    space: SearchSpace
    metric: str  # the value's name in best.yaml: val_top1, or <objective>_value
    band: tuple[float, float]  # the tier's latency band (ms): shaded in the plot; its upper edge
    # is what the final check's measured latencies must meet
    num_classes: int  # the head of the tier's pool, for a best trial that trained none
    device: str
    backend: str
    measure: Measure  # end-to-end latencies in this process; raises BackendUnavailable
    final: FinalCheck

    @classmethod
    def from_config(cls, cfg: DictConfig) -> OutputSettings:
        from gpunet.latency import build
        from gpunet.latency.end_to_end import measure_end_to_end
        from gpunet.search.objectives import objective_metric

        setup = build.LatencySetup.from_config(cfg)
        return cls(space_from_config(cfg.search_space), objective_metric(cfg.objective),
                   Tier.from_config(cfg.tier).band, build.head_classes(cfg), str(cfg.device.name),
                   str(cfg.latency.name), lambda specs, rounds: measure_end_to_end(specs, setup, rounds),
                   FinalCheck.from_config(cfg.search.final_check))


def _network(trial: Trial, settings: OutputSettings) -> NetworkSpec:
    # the trained head (train objective), else the data's classes: the head of the tier's pool
    num_classes = int(trial.extra.get("num_classes") or settings.num_classes)
    return encoding_to_spec(settings.space, trial.encoding, num_classes=num_classes)


def write_best(search_dir: Path, trials: list[Trial], settings: OutputSettings,
               launcher: Launcher | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The final check, then best.yaml (encoding, spec, latencies, value, params, MACs, the
    contenders' measurements) and best.onnx; `trials` must hold one with a value."""
    edge, final, ranking = settings.band[1], settings.final, ranked(trials)
    next_job = max((t.job for t in trials), default=-1) + 1

    def timed(contenders: list[Trial], job: int, settle: int) -> tuple[list[NetworkSpec], Measured]:
        specs = [_network(t, settings) for t in contenders]
        return specs, measure_contenders(
            search_dir, contenders, specs, final.rounds, settings.measure,
            {"device": settings.device, "backend": settings.backend}, launcher, overrides, job, settle)

    contenders = ranking[:final.top]
    specs, measured = timed(contenders, next_job, final.settle)  # the machine settles from training
    result, widened_from = measured.result, None
    if (result is not None and min(result.at_table_speed) > edge
            and len(ranking) > len(contenders) and final.widen > final.top):
        log.info("none of the top %d measured within the tier's edge (%.3f ms): timing the top %d",
                 final.top, edge, final.widen)
        widened_from, contenders = len(contenders), ranking[:final.widen]
        specs, measured = timed(contenders, next_job + 1, 0)  # settled by the first timing
        result = measured.result
    best, why = choose(contenders, result and result.at_table_speed, edge)
    spec = specs[contenders.index(best)]
    cost = spec_cost(spec)
    onnx_path = export_onnx(build_model(spec), search_dir / "best.onnx",
                            (1, 3, spec.resolution, spec.resolution))
    ms = result.ms if result else [None] * len(contenders)
    at_table_speed = result.at_table_speed if result else [None] * len(contenders)
    summary = {
        "trial": best.number, settings.metric: best.value, "status": best.status,
        "encoding": [int(x) for x in best.encoding],
        "est_latency_ms": best.est_latency_ms,
        "measured_latency_ms": ms[contenders.index(best)],
        "measured_at_table_speed_ms": at_table_speed[contenders.index(best)],
        **measured.fields(),
        "latency_context": {"device": settings.device, "backend": settings.backend},
        "final_check": {"chosen": why, "tier_edge_ms": edge, "rounds": final.rounds,
                        "settle": final.settle,  # measurements of the top discarded first
                        "widened_from": widened_from,  # the top first timed, when none of them fitted
                        "speed": result and result.speed,  # time now / when the table was measured
                        "measured": [{"trial": t.number, settings.metric: t.value,
                                      "est_latency_ms": t.est_latency_ms, "measured_latency_ms": m,
                                      "at_table_speed_ms": a}
                                     for t, m, a in zip(contenders, ms, at_table_speed)]},
        "params": cost.params, "macs": cost.macs, "resolution": spec.resolution,
        "onnx": onnx_path.name, "spec": spec.to_dict(),
    }
    write_text(search_dir / "best.yaml", yaml.safe_dump(summary, sort_keys=False, default_flow_style=None))
    return summary


def write_outputs(search_dir: Path, trials: list[Trial], settings: OutputSettings,
                  launcher: Launcher | None = None, overrides: Sequence[str] = ()
                  ) -> dict[str, Any] | None:
    """Everything a finished (or stopped) search leaves behind; returns the best summary.

    With the search's `launcher` and grid-point `overrides`, the final check's latencies are
    measured by a launcher job when the latency backend cannot run in this process."""
    plot_convergence(search_dir / "convergence.png", trials, settings.metric)
    if best_trial(trials) is None:
        log.warning("no trial of %s finished with a value: no best.yaml", search_dir)
        write_results_csv(search_dir / "results.csv", trials)
        plot_latency_vs_value(search_dir / "latency_vs_accuracy.png", trials, settings.metric, settings.band)
        return None
    summary = write_best(search_dir, trials, settings, launcher, overrides)
    write_results_csv(search_dir / "results.csv", trials, measured_latencies(summary))
    best = next(t for t in trials if t.number == summary["trial"])
    plot_latency_vs_value(search_dir / "latency_vs_accuracy.png", trials, settings.metric, settings.band,
                          best, measured_latencies(summary, "at_table_speed_ms"))
    return summary


LINE_STYLES = ("-", "--", ":", "-.")  # searches that coincide (a budget within the random start) stay visible


def write_comparison(sweep_dir: Path, searches: dict[str, list[Trial]],
                     bests: dict[str, dict[str, Any] | None]) -> None:
    """An ablation grid ends with one table and one plot comparing its searches. The table gives
    each search's most accurate trial and the network its final check chose (best.yaml's, the one
    within the tier by measurement when there was one), with that network's latency at the
    table's speed."""
    rows = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, trials) in enumerate(searches.items()):
        curve = best_so_far(trials)
        best, chosen = best_trial(trials), bests.get(label) or {}
        check = chosen.get("final_check") or {}
        latency = measured_latency(chosen)
        edge = check.get("tier_edge_ms")
        rows.append({"search": label, "trials": sum(t.finished for t in trials),
                     "failed": sum(t.status == "failed" for t in trials),
                     "best_value": None if best is None else best.value,
                     "best_est_latency_ms": None if best is None else best.est_latency_ms,
                     "best_encoding": None if best is None else "-".join(map(str, best.encoding)),
                     "chosen_trial": chosen.get("trial"),
                     "chosen_value": next((t.value for t in trials if t.number == chosen.get("trial")), None),
                     "chosen_latency_ms": latency,
                     "chosen_within_tier": None if latency is None or edge is None else latency <= edge})
        if curve.size:
            ax.plot(range(1, curve.size + 1), curve, label=label, linestyle=LINE_STYLES[i % len(LINE_STYLES)])
    ax.set(xlabel="trials", ylabel="best so far", title="Ablation: best value vs trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, sweep_dir / "comparison.png")
    write_text(sweep_dir / "comparison.csv", _csv_text(rows, list(rows[0])))
