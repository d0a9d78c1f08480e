"""TensorRT through its Python API, timed like `trtexec`'s GPU Compute Time.

Each module is exported to ONNX, parsed and built into an engine: TensorRT 10 takes an FP32 ONNX
with the FP16 builder flag; TensorRT >= 11 networks are strongly typed, so the ONNX itself is
FP16. Every inference (`execute_async_v3`) is bracketed by CUDA events on its stream. Buffers are
torch CUDA tensors, so no extra CUDA binding library is needed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpunet.latency.backends.base import Backend, BackendUnavailable, Runner
from gpunet.models import export_onnx

INSTALL_HINT = "install the optional extra: pip install 'gpunet[tensorrt]' (TensorRT >= 10 and CUDA)"


def import_tensorrt():
    """`tensorrt`, or a clear error naming the extra that provides it."""
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailable(f"latency=tensorrt needs the TensorRT Python package: "
                                 f"{INSTALL_HINT}; or use latency=torch") from err
    return tensorrt


class TensorRTBackend(Backend):
    name = "tensorrt"
    precisions = ("fp16", "fp32")
    device_types = ("cuda",)

    def __init__(self, latency: Mapping[str, Any], device: Mapping[str, Any], device_index: int = 0):
        super().__init__(latency, device, device_index)
        self.trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("latency=tensorrt needs a CUDA GPU; torch sees none")
        self.device = torch.device("cuda", device_index)
        self.opset = int(latency.get("opset", 17))
        self.workspace_gib = float(latency.get("workspace_gib", 4))
        self.major = int(self.trt.__version__.split(".")[0])
        self._logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._tmp = tempfile.TemporaryDirectory(prefix="gpunet-trt-")

    @classmethod
    def configured_settings(cls, latency: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
        return {"opset": int(latency.get("opset", 17)),
                "workspace_gib": float(latency.get("workspace_gib", 4))}

    def settings(self) -> dict[str, Any]:
        # strongly typed networks depend on the TensorRT version found here
        return {**super().settings(), "strongly_typed": self._strongly_typed}

    @property
    def _strongly_typed(self) -> bool:
        return self.major >= 11

    def versions(self) -> dict[str, str]:
        return {"tensorrt": self.trt.__version__, "cuda": str(torch.version.cuda)}

    def hardware(self) -> str:
        return torch.cuda.get_device_name(self.device)

    def _engine(self, module: nn.Module, input_shape: tuple[int, int, int, int]):
        trt = self.trt
        fp16_onnx = self._strongly_typed and self.precision == "fp16"
        dtype = torch.float16 if fp16_onnx else torch.float32
        # FP16 tracing runs on the CPU in half precision (supported by torch >= 2.1 for these ops).
        path = export_onnx(module.to(dtype), Path(self._tmp.name) / "probe.onnx", input_shape,
                           opset=self.opset, dtype=dtype)
        flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if self._strongly_typed else 0
        builder = trt.Builder(self._logger)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse the ONNX of {type(module).__name__}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_gib * 2**30))
        if self.precision == "fp16" and not self._strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {type(module).__name__}")
        return trt.Runtime(self._logger).deserialize_cuda_engine(serialized)

    def prepare(self, module: nn.Module, input_shape: tuple[int, int, int, int]) -> Runner:
        trt = self.trt
        with torch.cuda.device(self.device):
            engine = self._engine(module, input_shape)
            context = engine.create_execution_context()
            buffers = []
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                shape = tuple(engine.get_tensor_shape(name))
                dtype = {trt.float16: torch.float16, trt.float32: torch.float32}[
                    engine.get_tensor_dtype(name)]
                buffers.append(torch.randn(shape, device=self.device).to(dtype))
                context.set_tensor_address(name, buffers[-1].data_ptr())
            stream = torch.cuda.Stream(self.device)

        def run() -> list[float]:
            for _ in range(self.warmup):
                context.execute_async_v3(stream.cuda_stream)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(self.runs)]
            for start, end in events:
                start.record(stream)
                context.execute_async_v3(stream.cuda_stream)
                end.record(stream)
            stream.synchronize()
            return [start.elapsed_time(end) for start, end in events]

        run.keep_alive = (engine, buffers)  # the context needs its engine and buffers
        return run

    def close(self) -> None:
        self._tmp.cleanup()
