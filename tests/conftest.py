"""Shared fixtures: the Table-1 space, small specs that build fast on a CPU, and the apps' configs
composed once per session."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import gpunet  # noqa: F401  (registers the hub models with timm)
from gpunet.paths import CONF_DIR
from gpunet.space import load_space
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec


@pytest.fixture(scope="session")
def table1():
    return load_space("gpunet")


@pytest.fixture(scope="session")
def small_spec() -> NetworkSpec:
    """Every block kind, SE on both, both activations, a residual and a stride-2 of each kind."""
    layers = (
        LayerSpec("conv", 3, 8, 2, 3, "swish", stage=0),
        LayerSpec("conv", 8, 8, 1, 5, "relu", stage=1),
        LayerSpec("fused_irb", 8, 16, 2, 3, "swish", expansion=2, se=True, stage=2),
        LayerSpec("fused_irb", 16, 16, 1, 5, "relu", expansion=3, stage=2),
        LayerSpec("irb", 16, 24, 2, 5, "relu", expansion=4, se=True, stage=4),
        LayerSpec("irb", 24, 24, 1, 3, "swish", expansion=2.5, se=True, stage=4),
    )
    return NetworkSpec(40, layers, HeadSpec(24, 64, 10), name="small")


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny models and GPs on a busy 2-core box run several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Path:
    """Table and pool cache shared by every search of the session (the table builds once)."""
    return tmp_path_factory.mktemp("latency")


@pytest.fixture(scope="session")
def composed() -> Callable[..., DictConfig]:
    """`composed(app, *overrides)`: a copy of an app's config (search, train, latency_apps) with
    Hydra command-line overrides. Each (app, overrides) is composed once per session, as
    lightning-hydra-template's conftest does: composing takes about a second on a busy 2-core box,
    a copy a few milliseconds. Tests change their copy freely."""
    cache: dict[tuple[str, ...], DictConfig] = {}

    def get(app: str, *overrides: str) -> DictConfig:
        key = (app, *overrides)
        if key not in cache:
            with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                cache[key] = compose(app, overrides=list(overrides))
        return copy.deepcopy(cache[key])

    return get


@pytest.fixture
def compose_cfg(composed) -> Callable[..., DictConfig]:
    """`compose_cfg(root, *overrides, space=None, app="latency_apps")`: the app's config for one
    test: fast timing (5 runs after 1 warm-up), the latency table, pool cache and hub in `root`
    (a test's tmp_path), and `space` (a search-space dict) instead of the configured one."""

    def get(root: Path, *overrides: str, space: dict | None = None, app: str = "latency_apps") -> DictConfig:
        cfg = composed(app, "latency.runs=5", "latency.warmup=1", *overrides)
        cfg.latency.table = str(root / "table.sqlite")
        if app == "search":
            cfg.search.pool.cache_dir = str(root / "pools")
            cfg.hub.dir = str(root / "hub")
        if space is not None:
            OmegaConf.set_struct(cfg, False)
            cfg.search_space = space
        return cfg

    return get
