"""The one interface of every latency backend: time a module at an input shape.

A backend is built from the `latency` and `device` config nodes. It measures one table entry
(a layer or the head, gpunet.latency.keys.Probe) or a whole network the same way, so the table and
the end-to-end check of gpunet.latency.validate are comparable, and it describes where its timings
are valid (`context`), which keys the table.
"""

from __future__ import annotations

import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import timm
import torch
from torch import nn

from gpunet.errors import ConfigError, GpunetError
from gpunet.latency.keys import Probe, Shape
from gpunet.latency.timing import Timing, summarize
from gpunet.space.spec import NetworkSpec

# A prepared module: each call runs `warmup` untimed then `runs` timed inferences -> ms each.
Runner = Callable[[], list[float]]

# Clocks of CPU timings. "thread" is the CPU time of the measuring thread: on a shared machine it
# leaves out the time other processes hold the core, so it only suits single-threaded runs.
CLOCKS = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}


def cpu_clock(latency: Mapping[str, Any], threads: int):
    """The clock function named by latency.clock, checked against the thread count."""
    name = str(latency.get("clock", "wall"))
    if name not in CLOCKS:
        raise ConfigError(f"latency.clock={name!r} is not one of {sorted(CLOCKS)}")
    if name == "thread" and threads != 1:
        raise ConfigError(f"latency.clock=thread times only the calling thread, so it needs "
                          f"latency.threads=1 (got {threads}); use latency.clock=wall")
    return name, CLOCKS[name]


def time_interleaved(runners: Sequence[Runner], rounds: int, seed: int = 0,
                     on_step: Callable[[], None] | None = None) -> list[Timing]:
    """Prepared modules timed in `rounds` rounds that each visit every one in a new random order;
    a module's timing pools all its runs. On a shared machine a passing load spike then hits
    every module alike instead of deciding one module's figure."""
    samples: list[list[float]] = [[] for _ in runners]
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in order.permutation(len(runners)):
            samples[i] += runners[i]()
            if on_step is not None:
                on_step()
    return [summarize(s) for s in samples]


class BackendUnavailable(GpunetError, RuntimeError):
    """The backend cannot run here (missing library, device or unsupported setting)."""


def cpu_model() -> str:
    """The CPU's model name: a CPU table is only valid on the same kind of CPU."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class Backend(ABC):
    """Times modules; subclasses implement `prepare` for one (N, C, H, W) input."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    device_types: ClassVar[tuple[str, ...]]

    def __init__(self, latency: Mapping[str, Any], device: Mapping[str, Any], device_index: int = 0):
        self.latency_config, self.device_config = dict(latency), dict(device)
        self.device_name = str(device["name"])
        self.device_type = str(device["type"])
        self.device_index = device_index
        self.precision = str(latency["precision"])
        self.batch_size = int(latency["batch_size"])
        self.warmup = int(latency["warmup"])
        self.runs = int(latency["runs"])
        if self.device_type not in self.device_types:
            raise BackendUnavailable(
                f"latency={self.name} runs on {list(self.device_types)} devices, but device="
                f"{self.device_name} is a {self.device_type} device; pick another latency= backend")
        if self.precision not in self.precisions:
            raise BackendUnavailable(
                f"latency={self.name} supports precision {list(self.precisions)}, got "
                f"{self.precision!r} (set by device={self.device_name}); override latency.precision=")
        if self.batch_size < 1 or self.runs < 1 or self.warmup < 0:
            raise ConfigError(f"latency needs batch_size >= 1, runs >= 1, warmup >= 0; got "
                              f"{self.batch_size}, {self.runs}, {self.warmup}")

    # -- what subclasses provide ----------------------------------------------------------------
    @abstractmethod
    def prepare(self, module: nn.Module, input_shape: tuple[int, int, int, int]) -> Runner:
        """Export/compile/capture `module` (eval mode) once; the runner times it, as often as called
        (so a check can interleave several networks over time)."""

    @classmethod
    @abstractmethod
    def configured_settings(cls, latency: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
        """The settings the config alone fixes, known without creating the backend (so a machine
        that cannot run it can still pick a stored table context made with these settings)."""

    def settings(self) -> dict[str, Any]:
        """Backend settings that change timings (threads, opset, ...): the configured ones plus
        what the backend finds where it runs."""
        return self.configured_settings(self.latency_config, self.device_config)

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the backend's own libraries."""

    @abstractmethod
    def hardware(self) -> str:
        """The processor the timings come from."""

    # -- the interface -----------------------------------------------------------------------------
    def measure(self, module: nn.Module, shape: Shape) -> Timing:
        """Time `module` on a (batch, *shape) input -> median, p90, runs."""
        return summarize(self.prepare(module.eval(), (self.batch_size, *shape))())

    def measure_probe(self, probe: Probe) -> Timing:
        """One table entry (a layer or the head)."""
        return self.measure(probe.module(), probe.shape)

    def measure_network(self, spec: NetworkSpec) -> Timing:
        """A whole network end to end, the way its layers were timed."""
        return summarize(self.prepare_network(spec)())

    def measure_networks(self, specs: Sequence[NetworkSpec], rounds: int = 1, seed: int = 0,
                         on_step: Callable[[], None] | None = None) -> list[Timing]:
        """Whole networks end to end, in interleaved rounds (`time_interleaved`); `on_step` is
        called after each network is prepared and after each timed visit."""
        runners = []
        for spec in specs:
            runners.append(self.prepare_network(spec))
            if on_step is not None:
                on_step()
        return time_interleaved(runners, rounds, seed, on_step)

    def prepare_network(self, spec: NetworkSpec) -> Runner:
        from gpunet.models import build_model

        return self.prepare(build_model(spec).eval(), (self.batch_size, *spec.input_shapes()[0]))

    def context(self) -> dict[str, Any]:
        """Where these timings are valid: part of every table key."""
        return {"device": self.device_name, "hardware": self.hardware(), "backend": self.name,
                "precision": self.precision, "batch_size": self.batch_size,
                "settings": self.settings(),
                "versions": {"torch": str(torch.__version__), "timm": str(timm.__version__),
                             **{k: str(v) for k, v in self.versions().items()}}}

    @abstractmethod
    def close(self) -> None:
        """Release temporary files and device memory."""
