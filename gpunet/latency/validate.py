"""`python -m gpunet.latency.validate`: how well the table's sum predicts end-to-end latency.

Measures K networks of the search space, spread over its latency range, end to end with the
table's own backend (in interleaved rounds, so a passing load spike on a shared machine hits
every network alike)
and compares with their table estimates (paper Fig. 4): Pearson r, Kendall tau, MAPE and mean
bias, then fits end_to_end ~= a * sum + b * #entries + c + d * million parameters by least
squares on relative errors. The fit absorbs what a sum of isolated layers cannot see (per-call
overhead of the runtime, fusion across layers, weights that stay in cache while one layer is timed
alone but not in a whole network) and is stored with the table for estimates that ask for it
(latency.calibrated).
Its in-sample MAPE is reported next to a leave-one-out MAPE, the honest figure for new networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from scipy import stats
from tqdm import tqdm

from gpunet.checks import check_latency
from gpunet.errors import one_line_errors
from gpunet.files import save_figure, write_json, write_text
from gpunet.latency.build import LatencySetup, ensure_table
from gpunet.latency.end_to_end import measure_end_to_end
from gpunet.latency.estimate import sum_encodings
from gpunet.latency.table import Calibration, LatencyTable
from gpunet.paths import CONF_DIR
from gpunet.space.encoding import encoding_to_spec
from gpunet.space.sampling import sobol_encodings
from gpunet.space.search_space import SearchSpace, space_from_config


@dataclass(frozen=True)
class Fidelity:
    networks: int
    pearson_r: float
    kendall_tau: float
    mape_pct: float  # raw table sum vs end to end
    mean_bias_ms: float  # mean of (table sum - end to end)
    mean_bias_pct: float
    calibration: Calibration
    calibrated_mape_pct: float  # in sample
    calibrated_loo_mape_pct: float  # leave-one-out: each network predicted by a fit without it


def _design(sums_ms: np.ndarray, entries: np.ndarray, mparams: np.ndarray) -> np.ndarray:
    """Columns in the order of Calibration's a, b, c, d."""
    return np.column_stack([sums_ms, entries.astype(np.float64), np.ones_like(sums_ms), mparams])


def _fit(A: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Least squares on relative errors (rows divided by the measurement), since the target
    metric is a percentage error and latencies span an order of magnitude."""
    coef, *_ = np.linalg.lstsq(A / measured[:, None], np.ones_like(measured), rcond=None)
    return coef


def leave_one_out(A: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Each network's calibrated latency from a fit (design rows A) without it."""
    predicted = np.empty_like(measured)
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        predicted[i] = A[i] @ _fit(A[keep], measured[keep])
    return predicted


def _mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(100 * np.mean(np.abs(predicted - measured) / measured))


def fidelity(sums_ms: np.ndarray, entries: np.ndarray, mparams: np.ndarray,
             measured_ms: np.ndarray) -> Fidelity:
    """Agreement statistics of table sums vs end-to-end latencies, and the calibration fit
    (`mparams`: each network's parameters in millions)."""
    if len(measured_ms) < 5:
        raise ValueError(f"fidelity needs at least 5 networks, got {len(measured_ms)}")
    A = _design(sums_ms, entries, mparams)
    coef = _fit(A, measured_ms)
    loo = leave_one_out(A, measured_ms)
    calibrated = A @ coef
    bias = sums_ms - measured_ms
    return Fidelity(
        networks=len(measured_ms),
        pearson_r=float(stats.pearsonr(sums_ms, measured_ms)[0]),
        kendall_tau=float(stats.kendalltau(sums_ms, measured_ms)[0]),
        mape_pct=_mape(sums_ms, measured_ms),
        mean_bias_ms=float(bias.mean()),
        mean_bias_pct=float(100 * np.mean(bias / measured_ms)),
        calibration=Calibration(*map(float, coef), mape=_mape(calibrated, measured_ms),
                                networks=len(measured_ms)),
        calibrated_mape_pct=_mape(calibrated, measured_ms),
        calibrated_loo_mape_pct=_mape(loo, measured_ms),
    )


OVERSAMPLE = 64  # Sobol networks drawn per network measured, to spread the measured ones over latency


def spread_over_latency(sums_ns: np.ndarray, networks: int) -> np.ndarray:
    """Indices of `networks` of the sampled networks whose table sums are spread evenly from the
    sample's 0.5th to its 99.5th percentile: for each of `networks` evenly spaced targets, the
    nearest network not chosen yet. Sobol networks of a space are mostly small (on the CPU space
    none of 60 passed 1.25 ms), and a calibration fitted on them misjudges the large ones: end to
    end was 0.89-1.00x the sum for 0.5 ms networks and 1.01-1.17x for 2 ms ones, and refitted on
    networks of every tier the calibration's leave-one-out error was within 4% in each
    (experiments/results/tier_fidelity.md)."""
    lo, hi = np.percentile(sums_ns, [0.5, 99.5])
    free = np.ones(sums_ns.size, dtype=bool)
    chosen = []
    for target in np.linspace(lo, hi, networks):
        distance = np.where(free, np.abs(sums_ns - target), np.inf)
        chosen.append(int(np.argmin(distance)))
        free[chosen[-1]] = False
    return np.array(chosen)


def spread_sample(space: SearchSpace, table: LatencyTable, networks: int, seed: int,
                  num_classes: int) -> np.ndarray:
    """`networks` encodings spread over the space's latency range (`spread_over_latency`) from a
    Sobol sample OVERSAMPLE times larger (`seed` scrambles it)."""
    X = sobol_encodings(space, networks * OVERSAMPLE, seed)
    return X[spread_over_latency(sum_encodings(space, table, X, num_classes).total_ns, networks)]


def measure_sample(space: SearchSpace, table: LatencyTable, setup: LatencySetup, X: np.ndarray,
                   rounds: int) -> dict[str, Any]:
    """The networks `X`: their table sums, entry counts and end-to-end latencies at the table's
    speed (each the median of its runs over `rounds` interleaved rounds beside some of their
    layers, gpunet.latency.end_to_end), so the calibration describes the table, not how fast the
    machine ran while it was fitted (on this project's VM, 30-40% either way within minutes)."""
    sums = sum_encodings(space, table, X, setup.num_classes)
    specs = [encoding_to_spec(space, x, setup.num_classes) for x in X]
    with tqdm(desc=f"end to end: {len(specs)} networks beside table entries, {rounds} rounds",
              unit="step", dynamic_ncols=True) as bar:
        measured = measure_end_to_end(specs, setup, rounds, lambda: bar.update(1))
    return {"encodings": X, "sum_ms": sums.total_ns / 1e6, "entries": sums.entries,
            "mparams": sums.params / 1e6, "measured_ms": np.array(measured.at_table_speed),
            "speed": measured.speed}


def plot_fidelity(sample: dict[str, np.ndarray], result: Fidelity, title: str, path: Path) -> Path:
    """Scatter of table estimate vs end-to-end latency, raw and calibrated (paper Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = result.calibration
    calibrated = cal.apply(sample["sum_ms"], sample["entries"], sample["mparams"])
    measured = sample["measured_ms"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(measured, sample["sum_ms"], s=18, alpha=0.8,
               label=f"table sum (tau {result.kendall_tau:.3f}, MAPE {result.mape_pct:.1f}%)")
    ax.scatter(measured, calibrated, s=18, alpha=0.8, marker="x",
               label=f"calibrated (MAPE {result.calibrated_mape_pct:.1f}%, "
                     f"LOO {result.calibrated_loo_mape_pct:.1f}%)")
    lo = min(measured.min(), sample["sum_ms"].min(), calibrated.min())
    hi = max(measured.max(), sample["sum_ms"].max(), calibrated.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("estimated latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def report_markdown(result: Fidelity, context: Mapping[str, Any], space: str,
                    speed: float | None = None) -> str:
    cal = result.calibration
    pace = ("" if speed is None else f", at the table's speed (the machine ran {speed:.2f}x the "
                                     f"table's times: the timings / {speed:.2f})")
    return "\n".join([
        f"# Latency-table fidelity: search space `{space}`, {context['backend']} on {context['device']} "
        f"({context['hardware']}, {context['precision']}, batch {context['batch_size']})",
        "",
        f"{result.networks} networks spread over the space's latency range, each measured end to end "
        f"with the same backend{pace} and compared with the sum of its table entries.",
        "",
        "| metric | value |", "|---|---|",
        f"| Pearson r | {result.pearson_r:.4f} |",
        f"| Kendall tau | {result.kendall_tau:.4f} |",
        f"| MAPE (table sum) | {result.mape_pct:.2f} % |",
        f"| mean bias (sum - end to end) | {result.mean_bias_ms:+.4f} ms ({result.mean_bias_pct:+.1f} %) |",
        f"| calibration | e2e = {cal.a:.4f} x sum {cal.b:+.5f} ms x entries {cal.c:+.4f} ms "
        f"{cal.d:+.4f} ms x million parameters |",
        f"| calibrated MAPE (in sample) | {result.calibrated_mape_pct:.2f} % |",
        f"| calibrated MAPE (leave-one-out) | {result.calibrated_loo_mape_pct:.2f} % |",
        "",
    ])


@dataclass(frozen=True)
class ValidateOptions:
    """The validate app's knobs (its config's `validate` node)."""

    networks: int  # networks measured end to end (spread over the latency range)
    rounds: int  # interleaved timing rounds per network
    seed: int  # Sobol seed of the sample they are drawn from
    prefix: str  # file-name prefix of the outputs
    store_calibration: bool  # save the fitted calibration with the table


def validate(space: SearchSpace, setup: LatencySetup, options: ValidateOptions, out_dir: Path) -> Fidelity:
    """Run the fidelity check of the setup's table; writes JSON, Markdown, CSV and the scatter PNG."""
    table = ensure_table(setup, space)
    X = spread_sample(space, table, options.networks, options.seed, setup.num_classes)
    sample = measure_sample(space, table, setup, X, options.rounds)
    result = fidelity(sample["sum_ms"], sample["entries"], sample["mparams"], sample["measured_ms"])
    if options.store_calibration:
        table.set_calibration(result.calibration)
    write_outputs(out_dir / options.prefix, space.name, table, sample, result)
    return result


def write_outputs(stem: Path, space: str, table: LatencyTable, sample: dict[str, Any],
                  result: Fidelity) -> str:
    """The fidelity check's JSON, Markdown, CSV and scatter PNG at `stem`.*; prints and returns
    the Markdown report."""
    ctx = table.context
    markdown = report_markdown(result, ctx, space, sample["speed"])
    write_json(stem.with_suffix(".json"), {"search_space": space, "context": ctx,
                                           "table": str(table.path), "speed": sample["speed"],
                                           **asdict(result)})
    write_text(stem.with_suffix(".md"), markdown)
    rows = ["encoding,entries,mparams,table_sum_ms,end_to_end_ms"] + [
        f"{'-'.join(map(str, x))},{n},{p:.6f},{s:.6f},{m:.6f}" for x, n, p, s, m in
        zip(sample["encodings"], sample["entries"], sample["mparams"], sample["sum_ms"],
            sample["measured_ms"])]
    write_text(stem.with_suffix(".csv"), "\n".join(rows) + "\n")
    plot_fidelity(sample, result, f"{space}: {ctx['backend']} on {ctx['device']} "
                  f"({ctx['hardware']}), {result.networks} networks", stem.with_suffix(".png"))
    print(markdown)
    print(f"outputs: {stem}.{{json,md,csv,png}}")
    return markdown


def validate_app(cfg: DictConfig, out_dir: Path) -> Fidelity:
    """The validate app at its edge: the one place that reads its config."""
    v = cfg.validate
    options = ValidateOptions(int(v.networks), int(v.rounds), int(v.seed), str(v.prefix),
                              bool(v.store_calibration))
    return validate(space_from_config(cfg.search_space), LatencySetup.from_config(cfg), options, out_dir)


@hydra.main(config_path=str(CONF_DIR), config_name="latency_apps", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = cfg.validate.out_dir
    with one_line_errors():  # an error of ours is one line; any other keeps its traceback
        check_latency(cfg, "validate")
        validate_app(cfg, Path(hydra.utils.to_absolute_path(out)) if out else
                     Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
