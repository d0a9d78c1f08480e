"""Latency tiers (paper §3.2, Fig. 2.A): Sobol-sample the space, estimate, keep a tier's band.

A tier is `target_ms +- tolerance_ms` (conf/tier/*.yaml). A pool is cached on disk under a hash of
everything it depends on (space, table fingerprint, sample count, seed, head classes,
calibration), so a search re-uses it and a changed table makes a new one. Each new pool also
writes a histogram of the sampled latencies with its band marked next to it.
`python -m gpunet.latency.stratify` draws the histogram with every tier of conf/tier/.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from gpunet.checks import check_latency
from gpunet.config import plain
from gpunet.errors import ConfigError, GpunetError, one_line_errors
from gpunet.files import atomic_path, save_figure, write_json
from gpunet.latency.build import LatencySetup, ensure_table
from gpunet.latency.estimate import estimate_encodings
from gpunet.latency.table import LatencyTable
from gpunet.paths import CONF_DIR
from gpunet.space.encoding import canonical_encodings
from gpunet.space.sampling import sobol_encodings
from gpunet.space.search_space import SearchSpace, space_from_config


class EmptyTierError(GpunetError, ValueError):
    """No sampled network falls in the tier's band."""


@dataclass(frozen=True)
class Tier:
    name: str
    target_ms: float
    tolerance_ms: float

    def __post_init__(self) -> None:
        if self.target_ms <= 0 or not 0 <= self.tolerance_ms < self.target_ms:
            raise ConfigError(f"tier {self.name}: need target_ms > 0 and 0 <= tolerance_ms < target_ms, "
                              f"got {self.target_ms} +- {self.tolerance_ms}")

    @property
    def band(self) -> tuple[float, float]:
        return self.target_ms - self.tolerance_ms, self.target_ms + self.tolerance_ms

    def holds(self, latencies_ms: np.ndarray) -> np.ndarray:
        """Which latencies (ms) fall in the band, ends included: a boolean mask."""
        lo, hi = self.band
        latencies_ms = np.asarray(latencies_ms)
        return (latencies_ms >= lo) & (latencies_ms <= hi)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig) -> Tier:
        cfg = plain(cfg)
        try:
            return cls(str(cfg["name"]), float(cfg["target_ms"]), float(cfg["tolerance_ms"]))
        except KeyError as err:
            raise ConfigError(f"a tier config needs name, target_ms and tolerance_ms; got {cfg}") from err


def all_tiers() -> list[Tier]:
    """Every tier of conf/tier/, by target."""
    tiers = [Tier.from_config(OmegaConf.load(p)) for p in (CONF_DIR / "tier").glob("*.yaml")]
    return sorted(tiers, key=lambda t: t.target_ms)


def sample_latencies(space: SearchSpace, table: LatencyTable, n: int, seed: int,
                     num_classes: int, calibrated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`n` Sobol encodings of `space` and their estimated latencies (ms)."""
    X = sobol_encodings(space, n, seed)
    return X, estimate_encodings(space, table, X, num_classes, calibrated)


# What a cached pool file holds. 2: each encoding once (version 1 pools kept Sobol's repeats of an
# encoding, possible in small spaces, which mapped a trial back to the wrong row).
POOL_FORMAT = 2


def pool_key(space: SearchSpace, table: LatencyTable, n: int, seed: int, num_classes: int,
             calibrated: bool, canonical: bool = False) -> str:
    """Hash of everything a pool depends on (and of the pool format, so older files are not read)."""
    payload = json.dumps({"space": space.to_dict(), "table": table.fingerprint(), "n": n, "seed": seed,
                          "num_classes": num_classes, "calibrated": calibrated,
                          "format": POOL_FORMAT, **({"canonical": True} if canonical else {})},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def first_occurrences(X: np.ndarray) -> np.ndarray:
    """Indices of the rows of X seen for the first time, in their order in X."""
    if len(X) == 0:
        return np.arange(0)
    _, first = np.unique(X, axis=0, return_index=True)
    return np.sort(first)


def _empty_message(tier: Tier, space: SearchSpace, latencies: np.ndarray, table: LatencyTable) -> str:
    lo, hi = tier.band
    p1, p50, p99 = np.percentile(latencies, [1, 50, 99])
    fitting = [t.name for t in all_tiers() if t.holds(latencies).any()]
    return (f"tier {tier.name} ({lo:.3g}-{hi:.3g} ms) holds none of {len(latencies):,} Sobol samples of "
            f"search space {space.name!r} on {table.context.get('device')}/{table.context.get('backend')}: "
            f"their estimated latencies span {latencies.min():.3g}-{latencies.max():.3g} ms (1st/50th/"
            f"99th percentile {p1:.3g}/{p50:.3g}/{p99:.3g} ms). Pick a tier in that range "
            f"(non-empty here: {fitting or 'none of conf/tier'}; or tier.target_ms=... tier.tolerance_ms=...)"
            " or another search space")


def plot_tiers(latencies: np.ndarray, tiers: Sequence[Tier], title: str, path: Path) -> Path:
    """Histogram of estimated latencies with tier bands shaded and their pool sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(latencies, bins=200, color="0.35")
    colors = plt.get_cmap("tab10")
    for i, tier in enumerate(tiers):
        count = int(tier.holds(latencies).sum())
        ax.axvspan(*tier.band, color=colors(i % 10), alpha=0.3, label=f"{tier.name}: {count:,} networks")
    ax.set_xlabel("estimated latency (ms)")
    ax.set_ylabel("networks")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def tier_pool(space: SearchSpace, table: LatencyTable, tier: Tier, n: int = 1_000_000, seed: int = 0,
              cache_dir: str | Path = "outputs/latency/pools", *, num_classes: int,
              calibrated: bool = False, canonical: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The networks of a tier: (encodings int16 (M, D), estimated latencies ms (M,)).

    Each encoding is in the pool once, in the order Sobol first drew it (a small space makes
    Sobol repeat encodings; a pool row is then one candidate, so a trial maps back to its row).
    With `canonical`, each network is: its encodings are put in canonical form first
    (gpunet.space.canonical_encodings), for a search that trains networks, where two encodings
    of one network are one candidate (a synthetic objective's value is the encoding's own).
    Estimates assume a head of `num_classes` classes and apply the
    table's calibration if `calibrated`. Raises EmptyTierError, naming the latency range that
    exists, when the band holds none.
    """
    key = pool_key(space, table, n, seed, num_classes, calibrated, canonical)
    lo, hi = tier.band
    path = Path(cache_dir) / f"{space.name}-{key}-{lo:g}-{hi:g}ms.npz"
    if path.is_file():
        with np.load(path) as cached:
            return cached["encodings"], cached["latencies_ms"]
    X, latencies = sample_latencies(space, table, n, seed, num_classes, calibrated)
    if canonical:
        X = canonical_encodings(space, X)  # the same networks, so the same estimates
    keep = np.flatnonzero(tier.holds(latencies))
    if not keep.size:
        raise EmptyTierError(_empty_message(tier, space, latencies, table))
    keep = keep[first_occurrences(X[keep])]
    with atomic_path(path) as tmp:
        np.savez(tmp, encodings=X[keep], latencies_ms=latencies[keep])
    plot_tiers(latencies, [tier], f"{space.name}: {n:,} Sobol samples, {table.context.get('backend')} "
               f"on {table.context.get('device')}", path.with_suffix(".png"))
    return X[keep], latencies[keep]


@dataclass(frozen=True)
class StratifyOptions:
    """The stratify app's knobs (its config's `stratify` node and latency.calibrated)."""

    samples: int  # Sobol networks sampled and estimated
    seed: int  # scrambling seed of the Sobol sequence
    prefix: str  # file-name prefix of the outputs
    calibrated: bool = False  # apply the table's calibration


def stratify(space: SearchSpace, setup: LatencySetup, tiers: Sequence[Tier], options: StratifyOptions,
             out_dir: Path) -> dict[str, Any]:
    """Histogram of the space's sampled latencies with `tiers`, and each tier's pool size."""
    table = ensure_table(setup, space)
    n, seed = options.samples, options.seed
    _, latencies = sample_latencies(space, table, n, seed, setup.num_classes, options.calibrated)
    stem = out_dir / options.prefix
    ctx = table.context
    summary = {
        "search_space": space.name, "context": ctx, "samples": n, "seed": seed,
        "calibrated": options.calibrated, "num_classes": setup.num_classes,
        "range_ms": [float(latencies.min()), float(latencies.max())],
        "percentiles_ms": {str(q): float(v) for q, v in
                           zip((1, 10, 50, 90, 99), np.percentile(latencies, [1, 10, 50, 90, 99]))},
        "tiers": {t.name: {"band_ms": list(t.band),
                           "networks": int(t.holds(latencies).sum())}
                  for t in tiers},
    }
    write_json(stem.with_suffix(".json"), summary)
    plot_tiers(latencies, tiers, f"{space.name}: {n:,} Sobol samples, {ctx['backend']} on {ctx['device']} "
               f"({ctx['hardware']})", stem.with_suffix(".png"))
    print(json.dumps(summary["tiers"], indent=1))
    print(f"range {summary['range_ms'][0]:.3f}-{summary['range_ms'][1]:.3f} ms; outputs: {stem}.{{json,png}}")
    return summary


def stratify_app(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The stratify app at its edge: the one place that reads its config."""
    options = StratifyOptions(int(cfg.stratify.samples), int(cfg.stratify.seed), str(cfg.stratify.prefix),
                              bool(cfg.latency.calibrated))
    tiers = all_tiers() if cfg.stratify.all_tiers else [Tier.from_config(cfg.tier)]
    return stratify(space_from_config(cfg.search_space), LatencySetup.from_config(cfg), tiers, options,
                    out_dir)


@hydra.main(config_path=str(CONF_DIR), config_name="latency_apps", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = cfg.stratify.out_dir
    with one_line_errors():  # an error of ours is one line; any other keeps its traceback
        check_latency(cfg, "stratify")
        stratify_app(cfg, Path(to_absolute_path(out)) if out else Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
