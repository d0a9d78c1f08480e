"""What a finished search leaves in its directory: results.csv, best.yaml, best.onnx, plots.

best.yaml's measured end-to-end latency is measured where the device is: in the sweeper's own
process when the latency backend runs there, else as one more launcher job (`trial.kind=latency`,
on the nodes the candidates ran on). When neither can measure it, it is null, with a note saying
why and how to fill it in.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
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
from gpunet.latency.stratify import Tier  # noqa: E402
from gpunet.models import build_model, export_onnx, spec_cost  # noqa: E402
from gpunet.search.journal import Trial  # noqa: E402
from gpunet.search.loop import quote_value  # noqa: E402
from gpunet.space import SearchSpace, encoding_to_spec, space_from_config  # noqa: E402
from gpunet.space.spec import NetworkSpec  # noqa: E402

log = logging.getLogger(__name__)
CSV_FIELDS = ["number", "job", "status", "proposer", "pool_index", "value", "est_latency_ms",
              "duration_s", "epochs", "error", "encoding"]  # pool_index empty: beyond the pool


def result_rows(trials: list[Trial]) -> list[dict[str, Any]]:
    """One row per trial, the columns of results.csv."""
    return [{"number": t.number, "job": t.job, "status": t.status, "proposer": t.proposer,
             "pool_index": t.pool_index, "value": t.value,
             "est_latency_ms": round(t.est_latency_ms, 6), "duration_s": t.duration_s,
             "epochs": t.extra.get("epochs"), "error": t.error,
             "encoding": "-".join(str(x) for x in t.encoding)} for t in trials]


def _csv_text(rows: list[dict[str, Any]], fields: Sequence[str]) -> str:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_results_csv(path: Path, trials: list[Trial]) -> None:
    write_text(path, _csv_text(result_rows(trials), CSV_FIELDS))


def best_trial(trials: list[Trial]) -> Trial | None:
    scored = [t for t in trials if t.status in ("completed", "pruned") and t.value is not None]
    return max(scored, key=lambda t: t.value) if scored else None


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


def plot_latency_vs_value(path: Path, trials: list[Trial], metric: str,
                          band: tuple[float, float] | None) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for status, color in (("completed", "C0"), ("pruned", "C1"), ("failed", "C3")):
        chosen = [t for t in trials if t.status == status]
        if chosen:
            values = [t.value if t.value is not None and status != "failed" else np.nan
                      for t in chosen]
            ax.scatter([t.est_latency_ms for t in chosen], values, s=14, c=color, label=status)
    best = best_trial(trials)
    if best is not None:
        ax.scatter([best.est_latency_ms], [best.value], marker="*", s=200, c="gold",
                   edgecolors="k", label="best", zorder=3)
    if band is not None:
        ax.axvspan(*band, color="grey", alpha=0.15, label="tier")
    ax.set(xlabel="estimated latency (ms)", ylabel=metric, title="Latency vs " + metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _measured_on(context: dict[str, Any], where: str) -> dict[str, Any]:
    versions = {str(k): str(v) for k, v in (context.get("versions") or {}).items()}
    return {"where": where, "hardware": str(context.get("hardware")), "versions": versions}


def latency_job_overrides(base: Sequence[str], best: Trial, num_classes: int,
                          search_dir: Path) -> list[str]:
    """The overrides of the launcher job that measures the best network's latency."""
    return [*base, "++trial.kind=latency", f"trial.number={best.number}",
            f"trial.encoding=[{','.join(str(int(x)) for x in best.encoding)}]",
            f"++trial.num_classes={num_classes}",
            f"hydra.sweep.dir={quote_value(str(search_dir.resolve()))}", "hydra.sweep.subdir=best_latency"]


Measure = Callable[[NetworkSpec], tuple[float, dict[str, Any]]]


@dataclass(frozen=True)
class OutputSettings:
    """What a search's outputs take from its config, read once at the edge (`from_config`)."""

    space: SearchSpace
    metric: str  # the value's name in best.yaml: val_top1, or <objective>_value
    band: tuple[float, float]  # the tier's latency band (ms), shaded in the plot
    num_classes: int  # the head of the tier's pool, for a best trial that trained none
    device: str
    backend: str
    measure: Measure  # end-to-end latency in this process; raises BackendUnavailable

    @classmethod
    def from_config(cls, cfg: DictConfig) -> OutputSettings:
        from gpunet.latency import build
        from gpunet.search.objectives import objective_metric

        return cls(space_from_config(cfg.search_space), objective_metric(cfg.objective),
                   Tier.from_config(cfg.tier).band, build.head_classes(cfg), str(cfg.device.name),
                   str(cfg.latency.name),
                   lambda spec: build.measure_network_context(spec, build.LatencySetup.from_config(cfg)))


def measure_best(search_dir: Path, best: Trial, spec: NetworkSpec, settings: OutputSettings,
                 launcher: Launcher | None, overrides: Sequence[str], trials: list[Trial]
                 ) -> dict[str, Any]:
    """The best network's end-to-end latency for best.yaml: measured in this process when the
    backend runs here, else by a launcher job; null with a note when neither could."""
    from gpunet.latency.backends import BackendUnavailable

    try:
        ms, context = settings.measure(spec)
        return {"measured_latency_ms": float(ms), "measured_on": _measured_on(context, "sweeper")}
    except BackendUnavailable as err:
        reason = f"the sweeper cannot run latency={settings.backend} ({err})"
    if launcher is not None:
        job = latency_job_overrides(overrides, best, spec.head.num_classes, search_dir)
        log.info("measuring the best network's end-to-end latency as a launcher job")
        [ret] = launcher.launch([job], initial_job_idx=max((t.job for t in trials), default=-1) + 1)
        try:
            result = ret.return_value  # re-raises the job's exception if it failed
        except Exception as err:  # noqa: BLE001 - any job error is the reason it is not measured
            result = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        if isinstance(result, dict) and result.get("status") == "completed":
            return {"measured_latency_ms": float(result["measured_latency_ms"]),
                    "measured_on": _measured_on(result.get("context") or {}, "launcher job")}
        error = result.get("error") if isinstance(result, dict) else repr(result)
        reason += f", and neither could the launcher job sent to measure it ({error})"
    note = (f"not measured: {reason}. est_latency_ms is the table's estimate. To measure it, re-run "
            f"this search's command where latency={settings.backend} runs on device={settings.device} "
            "(it resumes: no trial runs again, and best.yaml is rewritten with the measurement)")
    log.warning("best.yaml: %s", note)
    return {"measured_latency_ms": None, "measured_latency_note": note}


def write_best(search_dir: Path, best: Trial, settings: OutputSettings,
               launcher: Launcher | None = None, overrides: Sequence[str] = (),
               trials: Sequence[Trial] = ()) -> dict[str, Any]:
    """best.yaml (encoding, spec, latencies, value, params, MACs) and best.onnx."""
    # the trained head (train objective), else the data's classes: the head of the tier's pool
    num_classes = int(best.extra.get("num_classes") or settings.num_classes)
    spec = encoding_to_spec(settings.space, best.encoding, num_classes=num_classes)
    cost = spec_cost(spec)
    onnx_path = export_onnx(build_model(spec), search_dir / "best.onnx",
                            (1, 3, spec.resolution, spec.resolution))
    summary = {
        "trial": best.number, settings.metric: best.value, "status": best.status,
        "encoding": [int(x) for x in best.encoding],
        "est_latency_ms": best.est_latency_ms,
        **measure_best(search_dir, best, spec, settings, launcher, overrides, list(trials) or [best]),
        "latency_context": {"device": settings.device, "backend": settings.backend},
        "params": cost.params, "macs": cost.macs, "resolution": spec.resolution,
        "onnx": onnx_path.name, "spec": spec.to_dict(),
    }
    write_text(search_dir / "best.yaml", yaml.safe_dump(summary, sort_keys=False, default_flow_style=None))
    return summary


def write_outputs(search_dir: Path, trials: list[Trial], settings: OutputSettings,
                  launcher: Launcher | None = None, overrides: Sequence[str] = ()
                  ) -> dict[str, Any] | None:
    """Everything a finished (or stopped) search leaves behind; returns the best summary.

    With the search's `launcher` and grid-point `overrides`, the best network's latency is
    measured by a launcher job when the latency backend cannot run in this process."""
    write_results_csv(search_dir / "results.csv", trials)
    plot_convergence(search_dir / "convergence.png", trials, settings.metric)
    plot_latency_vs_value(search_dir / "latency_vs_accuracy.png", trials, settings.metric, settings.band)
    best = best_trial(trials)
    if best is None:
        log.warning("no trial of %s finished with a value: no best.yaml", search_dir)
        return None
    return write_best(search_dir, best, settings, launcher, overrides, trials)


def write_comparison(sweep_dir: Path, searches: dict[str, list[Trial]]) -> None:
    """An ablation grid ends with one table and one plot comparing its searches."""
    rows = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, trials in searches.items():
        curve = best_so_far(trials)
        best = best_trial(trials)
        rows.append({"search": label, "trials": sum(t.finished for t in trials),
                     "failed": sum(t.status == "failed" for t in trials),
                     "best_value": None if best is None else best.value,
                     "best_est_latency_ms": None if best is None else best.est_latency_ms,
                     "best_encoding": None if best is None else "-".join(map(str, best.encoding))})
        if curve.size:
            ax.plot(range(1, curve.size + 1), curve, label=label)
    ax.set(xlabel="trials", ylabel="best so far", title="Ablation: best value vs trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, sweep_dir / "comparison.png")
    write_text(sweep_dir / "comparison.csv", _csv_text(rows, list(rows[0])))
