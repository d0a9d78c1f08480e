"""OmegaConf resolvers the configs use; registered at `import gpunet`, before any app composes."""

from __future__ import annotations

from omegaconf import OmegaConf


def tier_name(target_ms: float, tolerance_ms: float) -> str:
    """A tier's name from its band, so overriding the band renames the tier (directories, hub):
    "1ms" for the standard +-10% band, "0.05ms-pm0.01" for any other."""
    target, tolerance = float(target_ms), float(tolerance_ms)
    name = f"{target:g}ms"
    return name if abs(tolerance - 0.1 * target) <= 1e-9 * target else f"{name}-pm{tolerance:g}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("gpunet_tier_name"):
        OmegaConf.register_new_resolver("gpunet_tier_name", tier_name)
