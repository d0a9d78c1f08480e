"""PyTorch eager on the CPU, or on CUDA as the GPU is actually used for inference.

On CUDA the module runs in FP16 (or FP32) with channels_last memory, captured once in a CUDA graph
and replayed, each replay timed with CUDA events on the stream (so host-side launch overhead and
Python do not count, as in TensorRT's GPU compute time). On the CPU, eager inference with an
explicit thread count, timed by latency.clock (wall, or the thread's CPU time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gpunet.latency.backends.base import Backend, BackendUnavailable, Runner, cpu_clock, cpu_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchBackend(Backend):
    name = "torch"
    precisions = ("fp32", "fp16")
    device_types = ("cpu", "cuda")

    def __init__(self, latency: Mapping[str, Any], device: Mapping[str, Any], device_index: int = 0):
        super().__init__(latency, device, device_index)
        self.threads = int(latency.get("threads", 1))
        if self.device_type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailable(f"device={self.device_name} needs CUDA, but torch "
                                         f"{torch.__version__} sees no GPU; use device=cpu")
            self.device = torch.device("cuda", device_index)
            torch.backends.cudnn.benchmark = True  # pick the fastest kernels, as TensorRT does
        else:
            if self.precision != "fp32":
                raise BackendUnavailable("latency=torch on the CPU times fp32 only; set "
                                         "latency.precision=fp32")
            self.device = torch.device("cpu")
            self.clock_name, self.clock = cpu_clock(latency, self.threads)

    @classmethod
    def configured_settings(cls, latency: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
        if device["type"] == "cuda":
            return {"cuda_graph": True, "channels_last": True, "cudnn_benchmark": True}
        return {"threads": int(latency.get("threads", 1)), "clock": str(latency.get("clock", "wall"))}

    def versions(self) -> dict[str, str]:
        if self.device.type == "cuda":
            return {"cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())}
        return {}

    def hardware(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return cpu_model()

    def prepare(self, module: nn.Module, input_shape: tuple[int, int, int, int]) -> Runner:
        if self.device.type == "cuda":
            return self._prepare_cuda(module, input_shape)
        x = torch.randn(input_shape)

        def run() -> list[float]:
            samples = []
            threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                with torch.inference_mode():
                    for _ in range(self.warmup):
                        module(x)
                    for _ in range(self.runs):
                        start = self.clock()
                        module(x)
                        samples.append((self.clock() - start) / 1e6)
            finally:
                torch.set_num_threads(threads)
            return samples

        return run

    def _prepare_cuda(self, module: nn.Module, input_shape: tuple[int, int, int, int]) -> Runner:
        dtype = DTYPES[self.precision]
        module = module.to(self.device, dtype).to(memory_format=torch.channels_last)
        x = torch.randn(input_shape, device=self.device, dtype=dtype).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up (cuDNN autotuning) off the capture stream
                for _ in range(max(self.warmup, 3)):
                    module(x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                module(x)

        def run() -> list[float]:
            stream = torch.cuda.current_stream(self.device)
            for _ in range(self.warmup):
                graph.replay()
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(self.runs)]
            for start, end in events:
                start.record(stream)
                graph.replay()
                end.record(stream)
            torch.cuda.synchronize(self.device)
            return [start.elapsed_time(end) for start, end in events]

        run.keep_alive = (module, x)  # the graph reads and writes their memory
        return run

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
