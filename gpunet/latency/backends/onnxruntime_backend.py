"""ONNX Runtime on the CPU: export each module to ONNX, time a fully optimised session.

Thread counts are explicit (1 by default) so timings do not depend on the host's core count and
parallel build workers do not steal each other's cores; with one thread ORT computes on the
calling thread, so its CPU time (latency.clock=thread) is the latency without the time other
processes of a shared machine take the core. Inputs and outputs are bound once (IOBinding), so a
timed run is the graph's compute plus ORT's fixed per-call overhead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from torch import nn

from gpunet.errors import ConfigError
from gpunet.latency.backends.base import Backend, Runner, cpu_clock, cpu_model
from gpunet.models import export_onnx


def cpu_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with all graph optimisations, sequential execution and `threads` threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    precisions = ("fp32",)
    device_types = ("cpu",)

    def __init__(self, latency: Mapping[str, Any], device: Mapping[str, Any], device_index: int = 0):
        super().__init__(latency, device, device_index)
        self.threads = int(latency.get("threads", 1))
        self.opset = int(latency.get("opset", 17))
        if self.threads < 1:
            raise ConfigError(f"latency.threads must be >= 1, got {self.threads}")
        self.clock_name, self.clock = cpu_clock(latency, self.threads)
        self._tmp = tempfile.TemporaryDirectory(prefix="gpunet-ort-")

    @classmethod
    def configured_settings(cls, latency: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
        return {"threads": int(latency.get("threads", 1)), "opset": int(latency.get("opset", 17)),
                "graph_optimization": "all", "clock": str(latency.get("clock", "wall"))}

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": ort.__version__, "onnx": onnx.__version__}

    def hardware(self) -> str:
        return cpu_model()

    def prepare(self, module: nn.Module, input_shape: tuple[int, int, int, int]) -> Runner:
        # The session holds the model in memory, so the next export may overwrite the file.
        path = export_onnx(module, Path(self._tmp.name) / "probe.onnx", input_shape, opset=self.opset)
        session = cpu_session(path, self.threads)
        x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
        output = session.get_outputs()[0]
        y = np.empty(session.run(None, {"input": x})[0].shape, dtype=np.float32)
        binding = session.io_binding()
        binding.bind_cpu_input(session.get_inputs()[0].name, x)
        binding.bind_output(output.name, "cpu", 0, np.float32, y.shape, y.ctypes.data)

        def run() -> list[float]:
            for _ in range(self.warmup):
                session.run_with_iobinding(binding)
            samples = []
            for _ in range(self.runs):
                start = self.clock()
                session.run_with_iobinding(binding)
                samples.append((self.clock() - start) / 1e6)
            return samples

        run.keep_alive = (x, y)  # the binding points into their memory
        return run

    def close(self) -> None:
        self._tmp.cleanup()
