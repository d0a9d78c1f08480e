"""Latency backends behind one interface (base.Backend); `create_backend` picks one by name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from gpunet.latency.backends.base import Backend, BackendUnavailable

# name -> (module, class); imported on use so an optional backend's library is only needed there.
BACKENDS = {
    "onnxruntime": ("gpunet.latency.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "torch": ("gpunet.latency.backends.torch_backend", "TorchBackend"),
    "tensorrt": ("gpunet.latency.backends.tensorrt_backend", "TensorRTBackend"),
}


def create_backend(latency: Mapping[str, Any], device: Mapping[str, Any],
                   device_index: int = 0) -> Backend:
    """The backend named by `latency.name` for `device` (its `device_index`-th GPU)."""
    name = latency.get("name")
    if name not in BACKENDS:
        raise ValueError(f"latency.name={name!r} is not a latency backend; use one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(latency, device, device_index)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "create_backend"]
