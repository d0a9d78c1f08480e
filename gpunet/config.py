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
