"""Latency backends: real ONNX Runtime and torch timings on the CPU; GPU paths behind `-m gpu`."""

from __future__ import annotations

import gc
import importlib.util

import pytest
import torch

from gpunet.latency.backends import BackendUnavailable, create_backend
from gpunet.latency.keys import Probe
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec

CPU = {"name": "cpu", "type": "cpu"}
GPU = {"name": "h100", "type": "cuda"}
LAYER = Probe(LayerSpec("irb", 16, 16, 1, 3, "swish", expansion=3, se=True), (16, 16, 16))
HEAD = Probe(HeadSpec(16, 64, 10), (16, 4, 4))


def latency(name: str, **over) -> dict:
    return {"name": name, "precision": "fp32", "batch_size": 1, "warmup": 2, "runs": 9, **over}


def tiny_network() -> NetworkSpec:
    layers = (LayerSpec("conv", 3, 8, 2, 3, "swish", stage=0),
              LayerSpec("fused_irb", 8, 16, 2, 3, "relu", expansion=2, stage=2),
              LayerSpec("irb", 16, 16, 1, 3, "swish", expansion=3, se=True, stage=4))
    return NetworkSpec(32, layers, HeadSpec(16, 64, 10))


@pytest.mark.parametrize("name, extra", [("onnxruntime", {"threads": 1, "clock": "thread"}),
                                         ("onnxruntime", {"threads": 2, "clock": "wall"}),
                                         ("torch", {"threads": 1, "clock": "wall"})])
def test_cpu_backends_time_layers_heads_and_networks(name, extra):
    backend = create_backend(latency(name, **extra), CPU)
    try:
        for timing in (backend.measure_probe(LAYER), backend.measure_probe(HEAD),
                       backend.measure_network(tiny_network())):
            assert timing.runs == 9 and 0 < timing.median_ms <= timing.p90_ms < 1000
        ctx = backend.context()
        assert ctx["backend"] == name and ctx["device"] == "cpu" and ctx["batch_size"] == 1
        assert ctx["settings"]["threads"] == extra["threads"] and ctx["versions"]["torch"]
    finally:
        backend.close()


def test_a_bigger_layer_takes_longer():
    backend = create_backend(latency("onnxruntime", threads=1, clock="thread", runs=25), CPU)
    small = Probe(LayerSpec("irb", 16, 16, 1, 3, "relu", expansion=2), (16, 8, 8))
    big = Probe(LayerSpec("irb", 64, 64, 1, 5, "swish", expansion=6, se=True), (64, 32, 32))
    assert backend.measure_probe(big).median_ms > 5 * backend.measure_probe(small).median_ms
    backend.close()


def test_torch_cpu_restores_the_thread_count():
    before = torch.get_num_threads()
    backend = create_backend(latency("torch", threads=1), CPU)
    backend.measure_probe(LAYER)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("lat, device, match", [
    (latency("onnxruntime"), GPU, "runs on \\['cpu'\\] devices, but device=h100 is a cuda device"),
    (latency("onnxruntime", precision="fp16"), CPU, "supports precision \\['fp32'\\]"),
    (latency("onnxruntime", threads=2, clock="thread"), CPU, "needs latency.threads=1"),
    (latency("onnxruntime", clock="stopwatch"), CPU, "latency.clock='stopwatch' is not one of"),
    (latency("openvino"), CPU, "not a latency backend"),
    (latency("tensorrt", precision="fp16"), CPU, "runs on \\['cuda'\\] devices"),
])
def test_bad_settings_name_the_value(lat, device, match):
    with pytest.raises((ValueError, BackendUnavailable), match=match):
        create_backend(lat, device)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_without_the_extra_names_it():
    with pytest.raises(BackendUnavailable, match=r"pip install 'gpunet\[tensorrt\]'"):
        create_backend(latency("tensorrt", precision="fp16"), GPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_torch_on_cuda_without_a_gpu_says_so():
    with pytest.raises(BackendUnavailable, match="sees no GPU"):
        create_backend(latency("torch", precision="fp16"), GPU)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_torch_cuda_graph_timing(precision):
    backend = create_backend(latency("torch", precision=precision, runs=20), GPU)
    for timing in (backend.measure_probe(LAYER), backend.measure_network(tiny_network())):
        assert timing.runs == 20 and 0 < timing.median_ms <= timing.p90_ms < 100
    ctx = backend.context()
    assert ctx["settings"]["cuda_graph"] and ctx["hardware"] == torch.cuda.get_device_name(0)
    backend.close()


@pytest.mark.gpu
def test_tensorrt_fp16_engine_timing():
    pytest.importorskip("tensorrt")
    backend = create_backend(latency("tensorrt", precision="fp16", runs=20), GPU)
    for timing in (backend.measure_probe(LAYER), backend.measure_probe(HEAD),
                   backend.measure_network(tiny_network())):
        assert timing.runs == 20 and 0 < timing.median_ms <= timing.p90_ms < 100
    assert backend.context()["versions"]["tensorrt"]
    backend.close()


@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_prepared_networks_can_be_timed_in_interleaved_rounds(name):
    backend = create_backend(latency(name, threads=1), CPU)
    runners = [backend.prepare_network(tiny_network()), backend.prepare(LAYER.module(), (1, *LAYER.shape))]
    gc.collect()  # what a runner needs must survive without its caller holding it
    for _ in range(3):
        for run in runners:
            samples = run()
            assert len(samples) == 9 and min(samples) > 0
    backend.close()


@pytest.mark.parametrize("name, extra", [("onnxruntime", {"threads": 2, "clock": "wall", "opset": 15}),
                                         ("torch", {"threads": 1, "clock": "thread"})])
def test_the_configured_context_is_what_a_backend_reports_without_creating_it(name, extra):
    """A machine that cannot run a backend picks the stored context by what the config fixes;
    that must be exactly the part of the context the backend itself reports."""
    from gpunet.latency.backends import configured_context, context_matches

    configured = configured_context(latency(name, **extra), CPU)
    backend = create_backend(latency(name, **extra), CPU)
    try:
        context = backend.context()
    finally:
        backend.close()
    assert {k: context[k] for k in configured} == configured and context_matches(context, configured)
    assert not context_matches(context, configured_context(latency(name, threads=3), CPU))
