"""Per-layer latency tables measured on real backends, the estimate, tiers and their fidelity.

build (ensure_table, measure_network) -> table (LatencyTable) -> estimate (estimate_spec,
estimate_encodings) -> stratify (tier_pool); validate checks the estimate against end-to-end runs.
Names are imported on first use, so `python -m gpunet.latency.build` (and friends) do not import
their own module twice.
"""

import importlib

_EXPORTS = {
    "Backend": "backends", "BackendUnavailable": "backends", "create_backend": "backends",
    "LatencySetup": "build", "ensure_table": "build", "measure_network": "build",
    "MissingEntryError": "estimate", "estimate_encodings": "estimate", "estimate_spec": "estimate",
    "EmptyTierError": "stratify", "Tier": "stratify", "tier_pool": "stratify",
    "Calibration": "table", "LatencyTable": "table", "LatencyTableError": "table",
    "Timing": "timing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gpunet.latency' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gpunet.latency.{_EXPORTS[name]}"), name)
