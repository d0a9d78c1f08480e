"""Table keys: what one latency-table entry measures (a layer or the head) and its input shape.

The key is a canonical string of every field that changes the compute (not the stage index), so
a layer met in two stages or two networks is measured once, and the per-spec estimate, the
vectorised estimate and the table build all find an entry by the same string.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec

Shape = tuple[int, int, int]


def layer_key_of(block: str, in_channels: int, out_channels: int, stride: int, kernel: int,
                 act: str, expansion: float, se: bool, size: int) -> str:
    """The key of a layer whose square input is `size` x `size` (shared by every path)."""
    return (f"{block}|c{in_channels}->{out_channels}|s{stride}|k{kernel}|e{float(expansion)!r}"
            f"|se{int(bool(se))}|{act}|{in_channels}x{size}x{size}")


def head_key_of(in_channels: int, width: int, num_classes: int, size: int) -> str:
    return f"head|c{in_channels}->{width}|fc{num_classes}|{in_channels}x{size}x{size}"


def layer_key(layer: LayerSpec, shape: Shape) -> str:
    _check_square(shape)
    return layer_key_of(layer.block, layer.in_channels, layer.out_channels, layer.stride,
                        layer.kernel, layer.act, layer.expansion, layer.se, shape[1])


def head_key(head: HeadSpec, shape: Shape) -> str:
    _check_square(shape)
    return head_key_of(head.in_channels, head.width, head.num_classes, shape[1])


def _check_square(shape: Shape) -> None:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"latency keys take a square (C, H, W) input shape, got {shape}")


@dataclass(frozen=True)
class Probe:
    """One table entry to measure: a layer or the head, and the (C, H, W) input it sees."""

    part: LayerSpec | HeadSpec
    shape: Shape

    @property
    def key(self) -> str:
        if isinstance(self.part, HeadSpec):
            return head_key(self.part, self.shape)
        return layer_key(self.part, self.shape)

    @property
    def is_head(self) -> bool:
        return isinstance(self.part, HeadSpec)

    def fields(self) -> dict:
        """The key as a plain dict (stored next to the entry so the table is readable)."""
        kind = "head" if self.is_head else "layer"
        fields = asdict(self.part)
        fields.pop("stage", None)
        return {"kind": kind, **fields, "input_shape": list(self.shape)}

    def module(self) -> nn.Module:
        """The module this entry times: the timm block of the layer, or the network's head."""
        from gpunet.models import build_head, build_layer

        return build_head(self.part) if self.is_head else build_layer(self.part)


def spec_probes(spec: NetworkSpec) -> list[Probe]:
    """The entries a network's estimate sums: each layer at its input shape, then the head."""
    shapes = spec.input_shapes()
    return [Probe(layer, shape) for layer, shape in zip(spec.layers, shapes)] + [
        Probe(spec.head, shapes[-1])]
