"""`python -m gpunet.latency.build`: measure every table entry a search space can produce.

Enumerates the space's keys (gpunet.latency.space_keys), skips those already in the table, and
measures the rest with the configured backend, in parallel workers when asked, with a progress
bar. Entries are committed one by one, so a killed build resumes where it stopped. `ensure_table`
is the same step as a function for other apps (the search calls it before stratifying).

A table's context names the hardware and library versions it was measured with, which only a
machine that runs the backend knows. Where the backend cannot run (a CPU login node submitting
GPU jobs), the table is opened from its stored facts instead: the stored context made with the
config's device, backend, precision, batch and settings that holds every entry needed (the newest
such one). If there is none, the error names the one-time build to run on a node with the device.
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
from omegaconf import DictConfig

from gpunet import console
from gpunet.checks import check_latency
from gpunet.config import plain
from gpunet.errors import ConfigError, one_line_errors
from gpunet.files import write_json
from gpunet.latency.backends import BackendUnavailable, configured_context, context_matches, create_backend
from gpunet.latency.keys import Probe, spec_probes
from gpunet.latency.parallel import measure_into, measure_parallel
from gpunet.latency.space_keys import reach
from gpunet.latency.table import LatencyTable, StoredContext, stored_contexts
from gpunet.paths import CONF_DIR
from gpunet.space.search_space import SearchSpace, space_from_config
from gpunet.space.spec import NetworkSpec


class TableNotReady(BackendUnavailable):
    """The backend cannot run here and the table file holds no complete context for the config."""


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


@dataclass(frozen=True)
class LatencySetup:
    """What a table is measured with and where it lives, resolved at the app's edge: the backend's
    `latency` and `device` settings (plain dicts, as the backends take them), the head's class
    count, the search space's name (for the build command an error names) and the seed of the
    measuring order. Everything below the edge takes this, never the config."""

    latency: dict[str, Any]
    device: dict[str, Any]
    num_classes: int
    search_space: str
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> LatencySetup:
        """Read an app's `latency`, `device`, `data`, `search_space` and `seed` nodes."""
        return cls(plain(cfg["latency"]), plain(cfg["device"]), head_classes(cfg),
                   str(cfg["search_space"]["name"]), int(cfg.get("seed", 0)))

    @property
    def table_path(self) -> Path:
        """latency.table, relative paths taken from where the app was launched."""
        return table_path(self.latency)


def class_folders(data: Mapping[str, Any]) -> int | None:
    """The number of class folders of an ImageFolder tree's training split (None: not readable here)."""
    if data.get("name") != "imagefolder" or not data.get("root"):
        return None
    split = Path(str(data["root"])).expanduser() / str(data.get("train_split") or "train")
    if not split.is_dir():
        return None
    return sum(1 for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))


def head_classes(cfg: DictConfig | Mapping[str, Any]) -> int:
    """The head's class count of every latency estimate and table: latency.num_classes, which the
    configs set to data.num_classes (the one source of truth, also the trained head's size)."""
    data = plain(cfg["data"]) if "data" in cfg and cfg["data"] is not None else {}
    n = cfg["latency"]["num_classes"]
    found = class_folders(data)
    if n is None:
        where = f"data.root={data.get('root')}"
        hint = (f"{where} has {found} class folders: add data.num_classes={found}" if found is not None
                else f"set it to the number of class folders of {where}/{data.get('train_split')}")
        raise ConfigError(f"data={data.get('name')} needs data.num_classes: it sizes the head of "
                          f"every latency estimate and of the trained networks; {hint}")
    if found is not None and found != int(n):
        raise ConfigError(f"data.num_classes={n}, but data.root={data['root']} has {found} class folders "
                          f"in {data.get('train_split')}/: set data.num_classes={found}")
    return int(n)


def table_path(latency: Mapping[str, Any]) -> Path:
    """latency.table, relative paths taken from where the app was launched."""
    return Path(to_absolute_path(str(latency["table"])))


def worker_count(latency: Mapping[str, Any], device: Mapping[str, Any]) -> int:
    workers = latency.get("workers")
    if workers is None:
        workers = torch.cuda.device_count() if device["type"] == "cuda" else 1
    if int(workers) < 1:
        raise ConfigError(f"latency.workers must be >= 1 (or null: one per GPU), got {workers}")
    return int(workers)


def build_command(setup: LatencySetup) -> str:
    """The `python -m gpunet.latency.build` command that makes the setup's table."""
    latency, device = setup.latency, setup.device
    words = ["python -m gpunet.latency.build", f"device={device['name']}", f"latency={latency['name']}",
             f"search_space={setup.search_space}", f"data.num_classes={setup.num_classes}"]
    for key in ("precision", "batch_size"):
        if latency[key] != device[key]:
            words.append(f"latency.{key}={latency[key]}")
    words.append(f"latency.table={table_path(latency)}")
    return " ".join(words)


def _describe(stored: StoredContext) -> str:
    ctx = stored.context
    versions = ", ".join(f"{k} {v}" for k, v in sorted((ctx.get("versions") or {}).items()))
    return (f"{ctx.get('hardware')} ({versions}; settings {ctx.get('settings')}), {stored.entries:,} "
            f"entries, last measured {stored.last_measured}")


def stored_table(probes: Sequence[Probe], setup: LatencySetup, what: str,
                 reason: BackendUnavailable) -> LatencyTable:
    """The setup's table opened from its stored facts, for a machine where the backend cannot run.

    Takes the stored context made with the setup's device, backend, precision, batch and settings that
    holds every entry of `probes`; the newest one (by its last entry) if several do. Raises
    TableNotReady, naming the one-time build on a node with the device, if none does.
    """
    latency, device = setup.latency, setup.device
    path = setup.table_path
    wanted = configured_context(latency, device)
    needed = {p.key for p in probes}
    stored = stored_contexts(path)
    candidates = []
    for ctx in stored:
        if ctx.entries and context_matches(ctx.context, wanted):
            with LatencyTable(path, ctx.context) as table:
                candidates.append((ctx, needed - table.keys()))
    complete = sorted((c for c, missing in candidates if not missing),
                      key=lambda c: c.last_measured or "", reverse=True)
    label = (f"device={device['name']} latency={latency['name']} ({latency['precision']}, batch "
             f"{latency['batch_size']}, settings {wanted['settings']})")
    if not complete:
        if not path.is_file():
            state = f"{path} does not exist"
        elif not candidates:
            others = [c for c in stored if c.entries]
            state = (f"{path} has no entries measured for {label}" + (
                f" (it has {len(others)} other context(s), e.g. {others[0].context.get('device')}/"
                f"{others[0].context.get('backend')} {others[0].context.get('settings')})" if others else ""))
        else:
            fewest = min(candidates, key=lambda c: len(c[1]))
            state = (f"the stored context(s) for it in {path} miss entries ({len(fewest[1]):,} of the "
                     f"{len(needed):,} needed, e.g. {sorted(fewest[1])[0]})")
        raise TableNotReady(
            f"{what}: the latency table for {label} cannot be measured on this machine ({reason}), and "
            f"{state}. Build it once on a node with the device:\n    {build_command(setup)}\n(or run this "
            "command on such a node); afterwards any machine, this one included, reads the stored table.")
    chosen = complete[0]
    print(f"{what}: latency={latency['name']} cannot run here ({str(reason).splitlines()[0]}); using the "
          f"table's stored context for {label} in {path}: {_describe(chosen)}; it holds all "
          f"{len(needed):,} entries needed", flush=True)
    if len(complete) > 1:
        print(f"  (the newest of {len(complete)} complete stored contexts; the others: "
              + "; ".join(_describe(c) for c in complete[1:]) + ")", flush=True)
    return LatencyTable(path, chosen.context)


def fill(probes: Sequence[Probe], setup: LatencySetup, what: str) -> BuildReport:
    """Measure the entries of `probes` missing from the setup's table; returns what was done.

    Where the backend cannot run, nothing is measured: the table comes from its stored facts
    (`stored_table`), or TableNotReady says which build to run on a node with the device."""
    latency, device = setup.latency, setup.device
    try:
        backend = create_backend(latency, device)
    except BackendUnavailable as reason:
        keys = len({p.key for p in probes})
        return BuildReport(stored_table(probes, setup, what, reason), keys, keys, 0, 0.0)
    try:
        table = LatencyTable(setup.table_path, backend.context())
        present = table.keys()
        missing = [p for p in {p.key: p for p in probes}.values() if p.key not in present]
        keys = len({p.key for p in probes})
        # Random order spreads drifts in machine load over all kinds of layer.
        random.Random(setup.seed).shuffle(missing)
        workers = min(worker_count(latency, device), max(len(missing), 1))
        if missing:
            print(f"{what}: {keys:,} latency-table entries; {keys - len(missing):,} already in "
                  f"{table.path}; measuring {len(missing):,} with {workers} worker(s) ({backend.name}, "
                  f"{device['name']}, {latency['precision']}, batch {latency['batch_size']})", flush=True)
        else:
            print(f"{what}: the latency table is complete ({keys:,} entries in {table.path})", flush=True)
        others = table.other_contexts() if len(present) == 0 else []
        if others and missing:
            print(f"  (the file has entries of {len(others)} other context(s), e.g. {others[0]}; "
                  "library versions or settings differ, so they are not reused)", flush=True)
        start = time.perf_counter()
        if missing:
            with console.progress(len(missing), "measuring", unit="entry") as bar:
                if workers == 1:
                    measure_into(table, backend, missing, lambda: bar.update(1))
                else:
                    measure_parallel(missing, latency, device, str(table.path), table.context, workers,
                                     lambda: bar.update(1))
        return BuildReport(table, keys, keys - len(missing), len(missing), time.perf_counter() - start)
    finally:
        backend.close()


def build_table(setup: LatencySetup, space: SearchSpace, spec: NetworkSpec | None = None
                ) -> BuildReport:
    """Fill the table with every entry of `space` (and of `spec`, if given)."""
    probes = reach(space, setup.num_classes).probes()
    what = f"search space {space.name!r}"
    if spec is not None:
        probes += spec_probes(spec)
        what += f" + network {spec.name or '<unnamed>'}"
    return fill(probes, setup, what)


def ensure_table(setup: LatencySetup, space: SearchSpace) -> LatencyTable:
    """The setup's latency table with every entry of `space`, built where missing; from its
    stored facts where the backend cannot run (see `fill`)."""
    return build_table(setup, space).table


def measure_network(spec: NetworkSpec, setup: LatencySetup) -> float:
    """End-to-end latency (median ms) of one network with the setup's device and backend."""
    backend = create_backend(setup.latency, setup.device)
    try:
        return backend.measure_network(spec).median_ms
    finally:
        backend.close()


@hydra.main(config_path=str(CONF_DIR), config_name="latency_apps", version_base="1.3")
def main(cfg: DictConfig) -> None:
    console.setup()  # known-harmless warnings filtered, the others to the log
    with one_line_errors():  # an error of ours is one line; any other keeps its traceback
        check_latency(cfg, "build")
        build(cfg)


def build(cfg: DictConfig) -> None:
    from gpunet.models import resolve_spec

    setup, space = LatencySetup.from_config(cfg), space_from_config(cfg.search_space)
    spec = None
    if cfg.get("arch") is not None:
        spec = resolve_spec(cfg.arch, space).with_num_classes(setup.num_classes)
    report = build_table(setup, space, spec)
    summary = {"search_space": cfg.search_space.name, **report.summary()}
    out = Path(HydraConfig.get().runtime.output_dir) / "build_summary.json"
    write_json(out, summary)
    print(f"table {report.table.path}: {len(report.table):,} entries in this context; measured "
          f"{report.measured:,} in {report.seconds:.1f} s; summary {out}")


if __name__ == "__main__":
    main()
