"""NVIDIA's released JSON: all seven files load (or fail clearly), GPUNet-0/1/2 round-trip."""

from __future__ import annotations

import json

import pytest

from gpunet.paths import NVIDIA_CONFIGS_DIR
from gpunet.space import RELEASED, load_spec, save_spec, spec_from_nvidia, spec_to_nvidia

REFERENCE = sorted(NVIDIA_CONFIGS_DIR.glob("*.json"))


def test_all_seven_files_are_shipped():
    assert len(REFERENCE) == 7 and set(RELEASED.values()) == {p.name for p in REFERENCE}


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_1", "gpunet_2", "gpunet_p0", "gpunet_p1"])
def test_round_trip_exact(name, tmp_path):
    items = json.loads((NVIDIA_CONFIGS_DIR / RELEASED[name]).read_text())
    spec = spec_from_nvidia(items)
    assert spec_to_nvidia(spec) == items
    # and through gpunet's own JSON format
    assert load_spec(save_spec(spec, tmp_path / "net.json")) == spec


@pytest.mark.parametrize("name", ["gpunet_d1", "gpunet_d2"])
def test_distill_family_fails_clearly(name):
    with pytest.raises(ValueError, match="'distill' block family .* not support"):
        load_spec(NVIDIA_CONFIGS_DIR / RELEASED[name])


def test_gpunet0_reads_as_released():
    spec = load_spec(NVIDIA_CONFIGS_DIR / "0.65ms.json")
    assert spec.resolution == 320
    assert spec.layers[0].act == "swish"  # the stem has no `act`: swish by default
    assert [layer.stage for layer in spec.layers] == [0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 6, 6]
    assert spec.head.width == 1280 and spec.head.in_channels == 704
    # k//2 padding: 320 -> 160 -> 80 -> 40 -> 20 -> 10
    sizes = sorted({h for _, h, _ in spec.input_shapes()}, reverse=True)
    assert sizes == [320, 160, 80, 40, 20, 10]


@pytest.mark.parametrize("broken, message", [
    ([{"layer_type": "head"}], "start with a 'data' layer"),
    ([{"layer_type": "data", "img_resolution": 224}], "end with a 'tail' layer"),
    ([{"layer_type": "data", "img_resolution": 224},
      {"layer_type": "transformer", "num_in_channels": 3, "num_out_channels": 8},
      {"layer_type": "tail", "num_in_channels": 8, "num_out_channels": 16}], "'transformer' is not"),
])
def test_broken_files_fail_clearly(broken, message):
    with pytest.raises(ValueError, match=message):
        spec_from_nvidia(broken)
