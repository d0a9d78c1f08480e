"""`python -m gpunet.latency.build`: measure every table entry a search space can produce.

Enumerates the space's keys (gpunet.latency.space_keys), skips those already in the table, and
measures the rest with the configured backend, in parallel workers when asked, with a progress
bar. Entries are committed one by one, so a killed build resumes where it stopped. `ensure_table`
is the same step as a function for other apps (the search calls it before stratifying).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from gpunet.latency.backends import create_backend
from gpunet.latency.io import write_json
from gpunet.latency.keys import Probe, spec_probes
from gpunet.latency.parallel import measure_into, measure_parallel
from gpunet.latency.space_keys import reach
from gpunet.latency.table import LatencyTable
from gpunet.paths import CONF_DIR
from gpunet.space.space import space_from_config
from gpunet.space.spec import NetworkSpec


@dataclass(frozen=True)
class BuildReport:
    table: LatencyTable
    keys: int  # distinct entries the request needs
    present: int  # of those, already in the table
    measured: int
    seconds: float  # measuring time

    def summary(self) -> dict[str, Any]:
        return {"table": str(self.table.path), "context": self.table.context, "keys": self.keys,
                "present": self.present, "measured": self.measured,
                "seconds": round(self.seconds, 2),
                "entries_per_minute": round(60 * self.measured / self.seconds, 1) if self.seconds else None}


def plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A resolved plain-dict copy of a (Hydra) config node."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def table_path(latency: Mapping[str, Any]) -> Path:
    """latency.table, relative paths taken from where the app was launched."""
    return Path(to_absolute_path(str(latency["table"])))


def worker_count(latency: Mapping[str, Any], device: Mapping[str, Any]) -> int:
    workers = latency.get("workers")
    if workers is None:
        workers = torch.cuda.device_count() if device["type"] == "cuda" else 1
    if int(workers) < 1:
        raise ValueError(f"latency.workers must be >= 1 (or null: one per GPU), got {workers}")
    return int(workers)


def fill(probes: Sequence[Probe], cfg: DictConfig | Mapping[str, Any], what: str,
         seed: int = 0) -> BuildReport:
    """Measure the entries of `probes` missing from cfg's table; returns what was done."""
    latency, device = plain(cfg["latency"]), plain(cfg["device"])
    backend = create_backend(latency, device)
    try:
        table = LatencyTable(table_path(latency), backend.context(), int(latency["num_classes"]))
        present = table.keys()
        missing = [p for p in {p.key: p for p in probes}.values() if p.key not in present]
        keys = len({p.key for p in probes})
        # Random order spreads drifts in machine load over all kinds of layer.
        random.Random(seed).shuffle(missing)
        workers = min(worker_count(latency, device), max(len(missing), 1))
        print(f"{what}: {keys:,} latency-table entries; {keys - len(missing):,} already in "
              f"{table.path}; measuring {len(missing):,} with {workers} worker(s) "
              f"({backend.name}, {device['name']}, {latency['precision']}, batch {latency['batch_size']})",
              flush=True)
        others = table.other_contexts() if len(present) == 0 else []
        if others and missing:
            print(f"  (the file has entries of {len(others)} other context(s), e.g. {others[0]}; "
                  "library versions or settings differ, so they are not reused)", flush=True)
        start = time.perf_counter()
        if missing:
            with tqdm(total=len(missing), desc="measuring", unit="entry", dynamic_ncols=True) as bar:
                if workers == 1:
                    measure_into(table, backend, missing, lambda: bar.update(1))
                else:
                    measure_parallel(missing, latency, device, str(table.path), table.context, workers,
                                     lambda: bar.update(1))
        return BuildReport(table, keys, keys - len(missing), len(missing), time.perf_counter() - start)
    finally:
        backend.close()


def build_table(cfg: DictConfig | Mapping[str, Any], spec: NetworkSpec | None = None) -> BuildReport:
    """Fill the table with every entry of cfg's search space (and of `spec`, if given)."""
    space = space_from_config(cfg["search_space"])
    latency = plain(cfg["latency"])
    probes = reach(space, int(latency["num_classes"])).probes()
    what = f"search space {space.name!r}"
    if spec is not None:
        probes += spec_probes(spec)
        what += f" + network {spec.name or '<unnamed>'}"
    return fill(probes, cfg, what, seed=int(cfg.get("seed", 0)))


def ensure_table(cfg: DictConfig | Mapping[str, Any]) -> LatencyTable:
    """The latency table of cfg (`search_space`, `device`, `latency` nodes), built where missing."""
    return build_table(cfg).table


def measure_network(spec: NetworkSpec, cfg: DictConfig | Mapping[str, Any]) -> float:
    """End-to-end latency (median ms) of one network with cfg's device and backend."""
    backend = create_backend(plain(cfg["latency"]), plain(cfg["device"]))
    try:
        return backend.measure_network(spec).median_ms
    finally:
        backend.close()


@hydra.main(config_path=str(CONF_DIR), config_name="latency_build", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from gpunet.models import resolve_spec

    spec = None
    if cfg.get("arch") is not None:
        spec = resolve_spec(cfg.arch, space_from_config(cfg.search_space)).with_num_classes(
            int(cfg.latency.num_classes))
    report = build_table(cfg, spec)
    summary = {"search_space": cfg.search_space.name, **report.summary()}
    out = Path(HydraConfig.get().runtime.output_dir) / "build_summary.json"
    write_json(out, summary)
    print(f"table {report.table.path}: {len(report.table):,} entries in this context; measured "
          f"{report.measured:,} in {report.seconds:.1f} s; summary {out}")


if __name__ == "__main__":
    main()
