"""The network spec: the one description of a network that every part of gpunet speaks.

A network is a resolution, a list of layers (the stem first) and a head. The encoding decodes
into it, NVIDIA's JSON reads into it, the model builder builds it, and the latency table keys
its layers by (layer, input shape).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from gpunet.errors import ConfigError
from gpunet.space.search_space import ACTIVATIONS, BLOCKS

if TYPE_CHECKING:
    import numpy as np

SizeT = TypeVar("SizeT", int, "np.ndarray")


@dataclass(frozen=True)
class LayerSpec:
    """One layer. `expansion` is the IRB/Fused-IRB expansion ratio (1 for a plain conv)."""

    block: str
    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    act: str
    expansion: float = 1.0
    se: bool = False
    stage: int = 0

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError(f"layer block {self.block!r} is not one of {list(BLOCKS)}")
        if self.act not in ACTIVATIONS:
            raise ConfigError(f"layer activation {self.act!r} is not one of {list(ACTIVATIONS)}")
        if self.stride not in (1, 2):
            raise ConfigError(f"layer stride must be 1 or 2, got {self.stride}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"layer kernel must be a positive odd integer, got {self.kernel}")
        if self.in_channels < 1 or self.out_channels < 1 or self.expansion <= 0:
            raise ConfigError(f"layer widths and expansion must be positive: {self}")
        if self.block == "conv" and (self.expansion != 1 or self.se):
            raise ConfigError("a conv layer has no expansion or SE")


@dataclass(frozen=True)
class HeadSpec:
    """Conv1x1(width) -> BN -> ReLU -> global pool -> dropout -> Linear(num_classes)."""

    in_channels: int
    width: int
    num_classes: int = 1000


def conv_output_size(size: SizeT, stride: int) -> SizeT:
    """Spatial size after a conv with padding k//2 (odd k): ceil(size / stride); elementwise on
    an integer array (the vectorised estimate), so every path shares the one formula."""
    return -(-size // stride)


@dataclass(frozen=True)
class NetworkSpec:
    resolution: int
    layers: tuple[LayerSpec, ...]
    head: HeadSpec
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise ConfigError("a network needs at least the stem layer")
        if self.layers[0].in_channels != 3:
            raise ConfigError(f"the stem takes 3 input channels, got {self.layers[0].in_channels}")
        widths = [layer.in_channels for layer in self.layers[1:]] + [self.head.in_channels]
        for i, (layer, nxt) in enumerate(zip(self.layers, widths)):
            if layer.out_channels != nxt:
                raise ConfigError(f"layer {i} outputs {layer.out_channels} channels but the next "
                                  f"takes {nxt}")

    def input_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) entering each layer, then the head (len(layers) + 1)."""
        size, shapes = self.resolution, []
        for layer in self.layers:
            shapes.append((layer.in_channels, size, size))
            size = conv_output_size(size, layer.stride)
        shapes.append((self.head.in_channels, size, size))
        return shapes

    def with_num_classes(self, num_classes: int) -> NetworkSpec:
        return replace(self, head=replace(self.head, num_classes=num_classes))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resolution": self.resolution,
                "layers": [asdict(layer) for layer in self.layers], "head": asdict(self.head)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        try:
            return cls(resolution=int(data["resolution"]),
                       layers=tuple(LayerSpec(**layer) for layer in data["layers"]),
                       head=HeadSpec(**data["head"]), name=data.get("name"))
        except (KeyError, TypeError) as err:
            raise ConfigError(f"not a gpunet network spec: {err}") from err
