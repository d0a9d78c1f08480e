"""Shared fixtures: the Table-1 space and small specs that build fast on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gpunet  # noqa: F401  (registers the hub models with timm)
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


def random_valid(space, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.integers(0, c) for c in space.cardinalities])


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
