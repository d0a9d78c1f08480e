"""Config nodes at the apps' edge: the one way to turn a (Hydra) config node into plain values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf


def plain(node: Any) -> Any:
    """A resolved plain copy of a config node (DictConfig -> dict, ListConfig -> list, any other
    Mapping -> dict); any other value as it is. Library code below the edge takes these."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return dict(node)
    return node


def group_choice(group: str, choice: str, app: str = "search") -> dict[str, Any]:
    """One choice of a config group as `app` composes it, plain: e.g. ("searcher", "lamcts_bo").
    A group's file may extend another through its defaults list (lamcts_bo extends bo, the GPU
    devices and the synthetic objectives a shared base), so the file alone is not the config. For
    scripts outside a Hydra app (inside one, GlobalHydra is taken)."""
    from hydra import compose, initialize_config_dir

    from gpunet.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return plain(compose(app, overrides=[f"{group}={choice}"])[group])
