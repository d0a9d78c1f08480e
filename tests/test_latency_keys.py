"""Table keys and the enumeration of every key a search space can produce."""

from __future__ import annotations

import pytest
import torch
from test_latency_support import TINY, all_encodings, tiny_space

from gpunet.latency.keys import Probe, layer_key, spec_probes
from gpunet.latency.space_keys import reach
from gpunet.space import encoding_to_spec, load_space, space_from_config
from gpunet.space.spec import HeadSpec, LayerSpec


def test_the_walk_finds_exactly_the_keys_of_every_network():
    space = tiny_space()
    brute = {p.key for x in all_encodings(space)
             for p in spec_probes(encoding_to_spec(space, x, num_classes=10))}
    walked = [p.key for p in reach(space, num_classes=10).probes()]
    assert len(walked) == len(set(walked))
    assert set(walked) == brute


def test_the_walk_handles_an_empty_stage_before_a_shared_one():
    # Stage 2 may be empty and stage 3 shares its filters: stage 3's first layer can then take
    # stage 1's channels with stage 2's (unused) filter choice.
    cfg = {**TINY, "stages": [
        TINY["stages"][0],
        {"block": "conv", "stride": 1, "kernel": 3, "act": "relu", "layers": [1], "filters": [8, 16]},
        {"block": "irb", "stride": 1, "filters": [24, 32], "kernel": 3, "expansion": 2, "se": False,
         "act": "relu", "layers": [0, 1]},
        {"block": "irb", "stride": 2, "filters": "shared", "kernel": 3, "expansion": 2, "se": False,
         "act": "relu", "layers": [1, 2]},
    ]}
    space = space_from_config(cfg)
    brute = {p.key for x in all_encodings(space)
             for p in spec_probes(encoding_to_spec(space, x, num_classes=10))}
    assert {p.key for p in reach(space, num_classes=10).probes()} == brute


def test_cpu_space_key_count_is_small_and_table1_is_large():
    assert len(reach(load_space("cpu")).probes()) == 1183
    assert len(reach(load_space("gpunet")).probes()) > 100_000


def test_key_ignores_the_stage_and_the_type_of_the_expansion():
    a = LayerSpec("irb", 16, 24, 2, 3, "relu", expansion=4, se=True, stage=2)
    b = LayerSpec("irb", 16, 24, 2, 3, "relu", expansion=4.0, se=True, stage=6)
    assert layer_key(a, (16, 32, 32)) == layer_key(b, (16, 32, 32))
    assert layer_key(a, (16, 32, 32)) != layer_key(a, (16, 16, 16))
    with pytest.raises(ValueError, match="square"):
        layer_key(a, (16, 32, 16))


def test_probe_modules_take_their_input_shape():
    layer = Probe(LayerSpec("fused_irb", 8, 16, 2, 3, "swish", expansion=2, se=True), (8, 20, 20))
    head = Probe(HeadSpec(16, 32, 10), (16, 5, 5))
    with torch.no_grad():
        assert layer.module().eval()(torch.randn(1, *layer.shape)).shape == (1, 16, 10, 10)
        assert head.module().eval()(torch.randn(1, *head.shape)).shape == (1, 10)
    assert head.fields()["kind"] == "head" and layer.fields()["input_shape"] == [8, 20, 20]
    assert "stage" not in layer.fields()
