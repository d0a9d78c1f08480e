"""What a search is: the settings that decide which candidates are proposed and what their
values mean, and a fingerprint of them.

The journal starts with this definition, so re-running a command resumes the search only when it
is the same search; swapping a searcher, a seed, the data or a recipe knob is refused instead of
silently mixing two searches. Settings that only change how the search runs (n_trials, the
launcher, the logger, the batch size) are left out, so they may change on resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from gpunet.config import plain
from gpunet.errors import GpunetError
from gpunet.search.objectives import trains

# Data keys that change how the images are loaded, not which images or what they mean.
_OPERATIONAL_DATA_KEYS = ("num_workers",)


class SearchMismatch(GpunetError, ValueError):
    """The journal in a search directory was written by a search with another definition."""


def search_definition(cfg: DictConfig) -> dict[str, Any]:
    """The defining settings of the search `cfg` describes, as plain JSON-able values."""
    latency = cfg.latency
    definition: dict[str, Any] = {
        "search_space": plain(cfg.search_space),
        "latency": {"device": cfg.device.name, "backend": latency.name,
                    "precision": latency.precision, "batch_size": latency.batch_size,
                    "num_classes": latency.num_classes, "calibrated": latency.calibrated},
        "tier": {"target_ms": float(cfg.tier.target_ms), "tolerance_ms": float(cfg.tier.tolerance_ms)},
        "pool": {"samples": int(cfg.search.pool.samples), "seed": int(cfg.search.pool.seed)},
        "searcher": plain(cfg.searcher),
        "seed": int(cfg.seed),
        # `trains` is implied by the objective's name (left out: earlier searches still resume)
        "objective": {k: v for k, v in plain(cfg.objective).items() if k != "trains"},
    }
    if trains(cfg.objective):  # only a training objective reads these
        data = plain(cfg.data)
        definition["data"] = {k: v for k, v in data.items() if k not in _OPERATIONAL_DATA_KEYS}
        definition["recipe"] = plain(cfg.recipe)
        # the thresholds file is each job's, not the search's; "journal" (its key's former name,
        # always null here) stays so that searches started before the rename still resume
        stop = {k: v for k, v in plain(cfg.early_stop).items() if k != "thresholds"}
        definition["early_stopping"] = {"on": bool(cfg.search.early_stopping), **stop, "journal": None}
    return definition


def fingerprint(definition: Mapping[str, Any]) -> str:
    """A short stable hash of a definition (canonical JSON)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


# Settings added after searches were journaled, with the value that does what those searches did:
# a journal without the key reads as that value (resume an older search with it set so).
ADDED_SINCE = {
    "searcher.n_generated": 0,  # 0: the pool only (before the search left the pool)
    "searcher.screened_per_row": 0,  # 0: no analytic screen (before it existed)
    "searcher.kernel": "ordinal",  # the GP's only kernel before the knob existed
}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs; missing is None
    (a key of ADDED_SINCE missing from `old` reads as its value there)."""
    a, b = _flatten(old), _flatten(new)
    a.update({k: v for k, v in ADDED_SINCE.items() if k in b and k not in a})
    return [(key, a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys())
            if a.get(key) != b.get(key)]


def check_same_search(stored: Mapping[str, Any], definition: Mapping[str, Any], where: str) -> None:
    """Raise SearchMismatch naming the differing keys and the two ways out."""
    diff = differences(stored, definition)
    if not diff:
        return
    shown = "; ".join(f"{key}: {old!r} in the journal, {new!r} now" for key, old, new in diff[:8])
    more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
    raise SearchMismatch(
        f"{where} holds another search, so it cannot be resumed with these settings: "
        f"{shown}{more}. Run this search in a new directory (hydra.sweep.dir=...), or resume "
        f"that one with its original values (its search.yaml has them).")
