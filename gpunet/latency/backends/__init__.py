"""Latency backends behind one interface (base.Backend); `create_backend` picks one by name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from gpunet.errors import ConfigError
from gpunet.latency.backends.base import Backend, BackendUnavailable

# name -> (module, class); imported on use so an optional backend's library is only needed there.
BACKENDS = {
    "onnxruntime": ("gpunet.latency.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "torch": ("gpunet.latency.backends.torch_backend", "TorchBackend"),
    "tensorrt": ("gpunet.latency.backends.tensorrt_backend", "TensorRTBackend"),
}


def backend_class(latency: Mapping[str, Any]) -> type[Backend]:
    """The class of the backend named by `latency.name` (importing it needs no optional library)."""
    name = latency.get("name")
    if name not in BACKENDS:
        raise ConfigError(f"latency.name={name!r} is not a latency backend; use one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def create_backend(latency: Mapping[str, Any], device: Mapping[str, Any],
                   device_index: int = 0) -> Backend:
    """The backend named by `latency.name` for `device` (its `device_index`-th GPU)."""
    return backend_class(latency)(latency, device, device_index)


def configured_context(latency: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
    """What the config alone fixes of a backend's table context: device, backend, precision,
    batch and configured settings. The rest (the hardware's name, library versions, settings the
    backend finds where it runs) is only known on a machine that runs the backend."""
    cls = backend_class(latency)
    return {"device": str(device["name"]), "backend": cls.name, "precision": str(latency["precision"]),
            "batch_size": int(latency["batch_size"]), "settings": cls.configured_settings(latency, device)}


def context_matches(stored: Mapping[str, Any], configured: Mapping[str, Any]) -> bool:
    """Whether a stored table context was made with the configured device, backend, precision,
    batch and settings (its hardware and versions are whatever the measuring machine had)."""
    same = all(stored.get(k) == configured[k] for k in ("device", "backend", "precision", "batch_size"))
    settings = stored.get("settings") or {}
    return same and all(k in settings and settings[k] == v for k, v in configured["settings"].items())


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "backend_class", "configured_context",
           "context_matches", "create_backend"]
