"""The model hub: a latency-tiered table of networks (paper §1, §5), loadable with timm.

Two sources, one table:
  * NVIDIA's released GPUNets (`released.yaml`, shipped with the package), and
  * the best network of every finished search per (search space, device, tier, dataset), in the hub
    directory (`$GPUNET_HUB_DIR`, default ~/.cache/gpunet/hub): `hub.yaml` plus one spec JSON
    per entry.
Every entry is registered with timm at `import gpunet`, so `timm.create_model(name)` builds it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpunet.errors import ConfigError
from gpunet.files import write_text
from gpunet.space.formats import load_spec, released_spec, save_spec
from gpunet.space.spec import NetworkSpec

RELEASED_TABLE = Path(__file__).with_name("released.yaml")


def hub_dir() -> Path:
    return Path(os.environ.get("GPUNET_HUB_DIR", "~/.cache/gpunet/hub")).expanduser()


@dataclass
class HubEntry:
    name: str
    tier: str
    dataset: str
    top1: float | None  # top-1 on `dataset` as a fraction in [0, 1] (searches' val_top1)
    resolution: int
    latency_ms: dict[str, float]  # device -> latency on that device
    source: str = "search"
    spec_file: str | None = None  # searched entries: the spec JSON beside hub.yaml
    details: dict[str, Any] = field(default_factory=dict)

    def spec(self, directory: Path | None = None) -> NetworkSpec:
        if self.spec_file is None:
            return released_spec(self.name)
        return load_spec((directory or hub_dir()) / self.spec_file)


def _read(path: Path) -> list[HubEntry]:
    if not path.exists():
        return []
    try:
        items = yaml.safe_load(path.read_text()) or []
        return [HubEntry(**item) for item in items]
    except (yaml.YAMLError, TypeError) as err:
        raise ConfigError(f"the hub table {path} is not a list of hub entries: {err}") from err


def load_hub(directory: Path | None = None) -> list[HubEntry]:
    """Released entries, then searched ones."""
    return _read(RELEASED_TABLE) + _read((directory or hub_dir()) / "hub.yaml")


def entry_name(space: str, device: str, tier: str, dataset: str) -> str:
    """A timm-safe name (timm reads '.' as a pretrained tag) of the best network of a search
    space, device, tier and dataset: gpunet_cpu_cpu_0p5ms_digits (space cpu, device cpu)."""
    return f"gpunet_{space}_{device}_{tier}_{dataset}".replace(".", "p").replace("-", "_").lower()


@dataclass(frozen=True)
class HubUpdate:
    """What `add_search_result` did: `action` is added, replaced or kept; `entry` is the entry
    the hub holds now (the new one, or the kept more accurate one); `reason` says why."""

    action: str
    entry: HubEntry
    reason: str

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}"


@dataclass(frozen=True)
class SearchOrigin:
    """Where a search's best network comes from: what names its hub entry (search space, device,
    tier, dataset), the latency backend that timed it and the recipe its top-1 was trained with
    (its name and a hash of its settings: top-1s of two recipes are not comparable)."""

    search_space: str
    device: str
    tier: str
    dataset: str
    backend: str
    recipe: str | None = None

    @property
    def entry_name(self) -> str:
        return entry_name(self.search_space, self.device, self.tier, self.dataset)


def measured_latency(best: dict[str, Any]) -> float | None:
    """A search's best network's measured latency (best.yaml's content): the final check's figure
    at the latency table's speed, the raw one when the speed is unknown, None when unmeasured."""
    return best.get("measured_at_table_speed_ms", best.get("measured_latency_ms"))


def _edge_words(entry: HubEntry, device: str) -> str:
    """The entry's latency against its tier's upper edge, e.g. '1.114 ms, above the tier's 1.100 ms'."""
    latency, edge = entry.latency_ms[device], entry.details.get("tier_edge_ms")
    if edge is None:
        return f"{latency:.3f} ms"
    return f"{latency:.3f} ms, {'within' if latency <= edge else 'above'} the tier's {edge:.3f} ms"


def within_tier(entry: HubEntry, device: str) -> bool:
    """Whether the entry's latency is within its tier's upper edge (entries that do not record
    the edge, from before it was recorded, count as within)."""
    edge = entry.details.get("tier_edge_ms")
    return edge is None or entry.latency_ms[device] <= edge


def add_search_result(best: dict[str, Any], origin: SearchOrigin, directory: Path) -> HubUpdate:
    """Put a search's best network (best.yaml's content) in the hub at `directory`, replacing the
    entry of the same (search space, device, tier, dataset) when the new one measured within the
    tier and the entry did not, or when both are alike and the new one is more accurate, or when
    it was trained with another recipe (its top-1 then says nothing about the entry's); returns
    what was done. A tier's entry outside the tier is what `python -m gpunet.hub --budget` would
    misjudge, so one within it wins over a more accurate one above it."""
    name = origin.entry_name
    # the measured end-to-end latency at the latency table's speed (a machine that runs slower
    # than when its table was built would otherwise list a network of the 1 ms tier at 1.3 ms);
    # the table's estimate when it could not be measured
    raw, measured = best.get("measured_latency_ms"), measured_latency(best)
    latency = float(measured if measured is not None else best["est_latency_ms"])
    entry = HubEntry(name=name, tier=origin.tier, dataset=origin.dataset,
                     top1=float(best["val_top1"]), resolution=int(best["resolution"]),
                     latency_ms={origin.device: latency},
                     spec_file=f"{name}.json",
                     details={"est_latency_ms": best["est_latency_ms"],
                              "latency_source": "measured" if measured is not None else "estimate",
                              "measured_latency_ms": raw,
                              "backend": origin.backend, "params": best["params"],
                              "macs": best["macs"], "encoding": best["encoding"],
                              "search_space": origin.search_space, "recipe": origin.recipe,
                              "tier_edge_ms": (best.get("final_check") or {}).get("tier_edge_ms")})
    entries = _read(directory / "hub.yaml")
    current = next((e for e in entries if e.name == name), None)
    same_recipe = current is not None and current.details.get("recipe") == origin.recipe
    device = origin.device
    new_in = within_tier(entry, device)
    old_in = current is not None and device in current.latency_ms and within_tier(current, device)
    if current is not None and same_recipe and (old_in, current.top1 or 0.0) >= (new_in, entry.top1):
        if old_in and not new_in:
            return HubUpdate("kept", current, f"the hub's {name} measured within the tier "
                                              f"({_edge_words(current, device)}), this one did not "
                                              f"({_edge_words(entry, device)})")
        return HubUpdate("kept", current, f"the hub's {name} has top-1 {current.top1 or 0.0:.4f} >= "
                                          f"{entry.top1:.4f}")
    spec = NetworkSpec.from_dict({**best["spec"], "name": name})
    save_spec(spec, directory / entry.spec_file)
    entries = [e for e in entries if e.name != name] + [entry]
    write_text(directory / "hub.yaml",
                  yaml.safe_dump([asdict(e) for e in entries], sort_keys=False))
    from gpunet.models.registry import register_spec

    register_spec(name, lambda: entry.spec(directory))
    outside = "" if new_in else f"; it measured outside its tier ({_edge_words(entry, device)} edge)"
    if current is None:
        return HubUpdate("added", entry,
                         f"{name} (top-1 {entry.top1:.4f}) is new in {directory / 'hub.yaml'}{outside}")
    if not same_recipe:
        before, now = _recipe_words(current.details.get("recipe")), _recipe_words(origin.recipe)
        return HubUpdate("replaced", entry, f"{name}: the previous entry (top-1 {current.top1 or 0.0:.4f}) "
                                            f"was trained with {before}, this one (top-1 {entry.top1:.4f}) "
                                            f"with {now}: top-1s of two recipes are not compared; the newer "
                                            "replaces it")
    if new_in and not old_in:
        return HubUpdate("replaced", entry, f"{name}: this one measured within the tier "
                                            f"({_edge_words(entry, device)}), the previous one (top-1 "
                                            f"{current.top1 or 0.0:.4f}) did not")
    return HubUpdate("replaced", entry, f"{name}: top-1 {entry.top1:.4f} > the previous "
                                        f"{current.top1 or 0.0:.4f}{outside}")


def _recipe_words(recipe: str | None) -> str:
    """How a summary names an entry's recipe (entries written before recipes were recorded have none)."""
    return "an unrecorded recipe" if recipe is None else f"recipe {recipe}"


def query(entries: list[HubEntry], device: str | None = None, budget_ms: float | None = None,
          dataset: str | None = None) -> list[HubEntry]:
    """Entries measured on `device` within `budget_ms`, most accurate first (a budget without a
    device keeps entries that meet it on any of their devices)."""

    def latency(e: HubEntry) -> float:
        return e.latency_ms[device] if device is not None else min(e.latency_ms.values())

    chosen = [e for e in entries
              if (device is None or device in e.latency_ms)
              and (dataset is None or e.dataset == dataset)
              and (budget_ms is None or latency(e) <= budget_ms)]
    return sorted(chosen, key=lambda e: -(e.top1 or 0.0))


def register_hub_models(directory: Path | None = None) -> None:
    """Register every searched hub entry with timm (released ones are registered separately)."""
    from gpunet.models.registry import register_spec

    directory = directory or hub_dir()
    try:
        entries = _read(directory / "hub.yaml")
    except ValueError:
        return  # a broken user table must not break `import gpunet`; the CLI reports it
    for entry in entries:
        register_spec(entry.name, lambda entry=entry: entry.spec(directory))
