"""The file formats of a network spec, in one place: gpunet's own JSON and NVIDIA's released JSON.

gpunet's JSON is `NetworkSpec.to_dict()`. NVIDIA's is one object per layer, in network order: their
stem is the `head` layer (3x3 stride-2 conv, swish when `act` is absent) and their head is the
`tail` layer. The "distill" family (GPUNet-D1/D2, `"distill": true`) uses other blocks and is not
supported yet. `load_spec` reads either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpunet.errors import ConfigError, NotFoundError
from gpunet.files import write_text
from gpunet.paths import NVIDIA_CONFIGS_DIR
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec

STEM_KERNEL = 3
STEM_DEFAULT_ACT = "swish"

# Released architectures shipped with the package: hub name -> file.
RELEASED = {
    "gpunet_0": "0.65ms.json",
    "gpunet_1": "0.85ms.json",
    "gpunet_2": "1.75ms.json",
    "gpunet_p0": "0.5ms-D.json",
    "gpunet_p1": "0.8ms-D.json",
    "gpunet_d1": "1.25ms-D.json",
    "gpunet_d2": "2.25ms-D.json",
}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _layer_from_nvidia(i: int, item: dict[str, Any]) -> LayerSpec:
    kind = item["layer_type"]
    common = dict(in_channels=int(item["num_in_channels"]), out_channels=int(item["num_out_channels"]))
    if kind == "head":
        return LayerSpec("conv", stride=2, kernel=STEM_KERNEL, act=item.get("act", STEM_DEFAULT_ACT),
                         stage=0, **common)
    if kind not in ("conv", "fused_irb", "irb"):
        raise ConfigError(f"NVIDIA layer {i}: layer_type {kind!r} is not supported "
                          "(known: data, head, conv, fused_irb, irb, tail)")
    extra = {} if kind == "conv" else dict(expansion=float(item["expansion"]),
                                            se=bool(item.get("use_se", False)))
    return LayerSpec(kind, stride=int(item["stride"]), kernel=int(item["kernel_size"]),
                     act=item.get("act", "relu"), stage=int(item.get("stage", 0)), **common, **extra)


def spec_from_nvidia(items: list[dict[str, Any]], name: str | None = None) -> NetworkSpec:
    """NVIDIA's layer list -> NetworkSpec, or a ValueError saying what is unsupported."""
    if not items or items[0].get("layer_type") != "data":
        raise ConfigError("NVIDIA GPUNet JSON must start with a 'data' layer")
    data = items[0]
    if data.get("distill", False):
        raise ConfigError(f"{name or 'this network'} is from NVIDIA's 'distill' block family "
                          "(GPUNet-D1/D2: 'distill': true), which gpunet does not support yet")
    if items[-1].get("layer_type") != "tail":
        raise ConfigError("NVIDIA GPUNet JSON must end with a 'tail' layer")
    tail = items[-1]
    layers = tuple(_layer_from_nvidia(i, item) for i, item in enumerate(items[1:-1], start=1))
    head = HeadSpec(int(tail["num_in_channels"]), int(tail["num_out_channels"]),
                    int(tail.get("num_classes", 1000)))
    return NetworkSpec(int(data["img_resolution"]), layers, head, name=name)


def spec_to_nvidia(spec: NetworkSpec) -> list[dict[str, Any]]:
    """NetworkSpec -> NVIDIA's layer list (the inverse of spec_from_nvidia)."""
    stem, *body = spec.layers
    items: list[dict[str, Any]] = [
        {"layer_type": "data", "img_resolution": spec.resolution, "distill": False}]
    head_item = {"layer_type": "head", "num_in_channels": stem.in_channels,
                 "num_out_channels": stem.out_channels}
    if stem.act != STEM_DEFAULT_ACT:
        head_item["act"] = stem.act
    items.append(head_item)
    for layer in body:
        item = {"layer_type": layer.block, "num_in_channels": layer.in_channels,
                "num_out_channels": layer.out_channels, "stride": layer.stride,
                "kernel_size": layer.kernel, "act": layer.act, "stage": layer.stage}
        if layer.block != "conv":
            item.update(expansion=_number(layer.expansion), use_se=layer.se)
        items.append(item)
    items.append({"layer_type": "tail", "num_in_channels": spec.head.in_channels,
                  "num_out_channels": spec.head.width, "num_classes": spec.head.num_classes})
    return items


def released_spec(name: str) -> NetworkSpec:
    """A released architecture by hub name (gpunet_0, gpunet_1, ...)."""
    if name not in RELEASED:
        raise ConfigError(f"unknown released GPUNet {name!r}; known: {sorted(RELEASED)}")
    spec = load_spec(NVIDIA_CONFIGS_DIR / RELEASED[name])
    return NetworkSpec(spec.resolution, spec.layers, spec.head, name=name)


def load_spec(path: str | Path) -> NetworkSpec:
    """Read a spec JSON file: gpunet's own format or NVIDIA's released format."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no network spec at {path}")
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return spec_from_nvidia(data, name=path.stem)
    return NetworkSpec.from_dict(data)


def save_spec(spec: NetworkSpec, path: str | Path) -> Path:
    """Write `spec` as gpunet's JSON (atomically), the file `load_spec` reads back."""
    return write_text(path, json.dumps(spec.to_dict(), indent=1))
