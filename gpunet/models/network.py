"""Build an nn.Module from a NetworkSpec, in timm's EfficientNet style, from timm's own blocks.

Layer mapping (NVIDIA's released GPUNet semantics, with standard k//2 padding):
  conv      -> ConvBnAct (never residual)
  fused_irb -> EdgeResidual (FusedMBConv): kxk conv to mid -> BN-act -> [SE] -> 1x1 -> BN
  irb       -> InvertedResidual (MBConv): 1x1 to mid -> BN-act -> dw kxk -> BN-act -> [SE] -> 1x1 -> BN
with mid = make_divisible(in * expansion, 8); SE on mid, squeezing to round(mid * 0.25 / e)
(about in/4) with the block's activation and a sigmoid gate; BatchNorm eps 1e-3; residual with
drop-path when stride 1 and in == out, the drop-path rate rising linearly over the blocks.

NVIDIA's code pads every stride-2 fused-IRB conv with zeros of width 0 (a reported bug: GPUNet-0
maps 320 -> 160 -> 79 -> 39 ...); we use k//2 (320 -> 160 -> 80 -> 40 ...), which costs 2-4% more
MACs and leaves parameter counts unchanged.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import BatchNormAct2d, SelectAdaptivePool2d, create_conv2d, get_act_layer
from timm.models._efficientnet_blocks import (
    ConvBnAct,
    EdgeResidual,
    InvertedResidual,
    SqueezeExcite,
)
from torch import nn

from gpunet.space.spec import LayerSpec, NetworkSpec

BN_EPS = 1e-3
norm_layer = partial(nn.BatchNorm2d, eps=BN_EPS)


def build_layer(layer: LayerSpec, drop_path_rate: float = 0.0) -> nn.Module:
    """One spec layer -> the matching timm block."""
    act = get_act_layer(layer.act)
    if layer.block == "conv":
        return ConvBnAct(layer.in_channels, layer.out_channels, layer.kernel, stride=layer.stride,
                         act_layer=act, norm_layer=norm_layer)
    se_layer = partial(SqueezeExcite, rd_ratio=0.25 / layer.expansion) if layer.se else None
    common = dict(stride=layer.stride, exp_ratio=layer.expansion, act_layer=act,
                  norm_layer=norm_layer, se_layer=se_layer, drop_path_rate=drop_path_rate)
    if layer.block == "fused_irb":
        return EdgeResidual(layer.in_channels, layer.out_channels, exp_kernel_size=layer.kernel,
                            **common)
    return InvertedResidual(layer.in_channels, layer.out_channels, dw_kernel_size=layer.kernel,
                            **common)


class GPUNet(nn.Module):
    """A network of the GPUNet search space, with timm's classifier API."""

    def __init__(self, spec: NetworkSpec, num_classes: int | None = None, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "avg") -> None:
        super().__init__()
        if in_chans != 3:
            raise ValueError(f"GPUNet specs take 3 input channels, got in_chans={in_chans}")
        if num_classes is not None:
            spec = spec.with_num_classes(num_classes)
        self.spec = spec
        self.num_classes = spec.head.num_classes
        self.num_features = self.head_hidden_size = spec.head.width
        self.drop_rate = drop_rate
        stem, *body = spec.layers
        self.stem = build_layer(stem)
        n = len(body)
        self.blocks = nn.Sequential(*[
            build_layer(layer, drop_path_rate * i / max(n - 1, 1)) for i, layer in enumerate(body)])
        self.conv_head = create_conv2d(spec.head.in_channels, spec.head.width, 1)
        self.bn2 = BatchNormAct2d(spec.head.width, eps=BN_EPS, act_layer=nn.ReLU)
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.classifier = self._classifier(self.num_classes)
        self._init_weights()

    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1.0 / m.in_features ** 0.5, 1.0 / m.in_features ** 0.5)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.classifier = self._classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(spec: NetworkSpec, **kwargs) -> GPUNet:
    """Spec -> model; kwargs as GPUNet (num_classes, drop_rate, drop_path_rate, ...)."""
    return GPUNet(spec, **kwargs)
