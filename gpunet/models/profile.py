"""Parameters and MACs of a spec, computed analytically (no model is built).

MACs count the multiply-accumulates of convolutions and the classifier, the usual convention
(BatchNorm, activations, pooling and the SE gate's product are not counted). The counts follow the
blocks of gpunet.models.network exactly; tests cross-check them against forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.layers import make_divisible

from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec, conv_output_size


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)


def _conv(cin: int, cout: int, k: int, out_hw: int, groups: int = 1, bias: bool = False) -> Cost:
    weights = k * k * (cin // groups) * cout
    return Cost(weights + (cout if bias else 0), weights * out_hw * out_hw)


def _bn(channels: int) -> Cost:
    return Cost(2 * channels, 0)


def mid_channels(layer: LayerSpec) -> int:
    """Expanded width of an (F-)IRB, as timm's blocks compute it."""
    return make_divisible(layer.in_channels * layer.expansion, 8)


def se_channels(layer: LayerSpec) -> int:
    """SE squeeze width: round(mid * 0.25 / expansion), about in/4."""
    return round(mid_channels(layer) * 0.25 / layer.expansion)


def layer_cost(layer: LayerSpec, size: int) -> Cost:
    """Cost of one layer whose input is `size` x `size`."""
    out = conv_output_size(size, layer.stride)
    cin, cout, k = layer.in_channels, layer.out_channels, layer.kernel
    if layer.block == "conv":
        return _conv(cin, cout, k, out) + _bn(cout)
    mid = mid_channels(layer)
    if layer.block == "fused_irb":
        cost = _conv(cin, mid, k, out) + _bn(mid)
    else:
        cost = _conv(cin, mid, 1, size) + _bn(mid) + _conv(mid, mid, k, out, groups=mid) + _bn(mid)
    if layer.se:
        rd = se_channels(layer)
        cost = cost + _conv(mid, rd, 1, 1, bias=True) + _conv(rd, mid, 1, 1, bias=True)
    return cost + _conv(mid, cout, 1, out) + _bn(cout)


def layer_params(layer: LayerSpec) -> int:
    """Parameters of one layer (the same at every input size)."""
    return layer_cost(layer, 1).params


def head_cost(head: HeadSpec, size: int) -> Cost:
    """Cost of the head whose input is `size` x `size`."""
    fc = Cost(head.width * head.num_classes + head.num_classes, head.width * head.num_classes)
    return _conv(head.in_channels, head.width, 1, size) + _bn(head.width) + fc


def spec_cost(spec: NetworkSpec) -> Cost:
    """Total parameters and MACs of a network at its resolution."""
    shapes = spec.input_shapes()
    total = Cost(0, 0)
    for layer, (_, size, _) in zip(spec.layers, shapes):
        total = total + layer_cost(layer, size)
    return total + head_cost(spec.head, shapes[-1][1])
