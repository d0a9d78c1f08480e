"""Build an nn.Module from a NetworkSpec, in timm's EfficientNet style, from timm's own blocks.

Layer mapping (NVIDIA's released GPUNet semantics, with standard k//2 padding):
  conv      -> ConvBnAct (never residual)
  fused_irb -> EdgeResidual (FusedMBConv): kxk conv to mid -> BN-act -> [SE] -> 1x1 -> BN
  irb       -> InvertedResidual (MBConv): 1x1 to mid -> BN-act -> dw kxk -> BN-act -> [SE] -> 1x1 -> BN
with mid = make_divisible(in * expansion, 8); SE on mid, squeezing to round(mid * 0.25 / e)
(about in/4) with the block's activation and a sigmoid gate; BatchNorm eps 1e-3 (its momentum is
an argument: the training recipe's bn_momentum); residual with drop-path when stride 1 and
in == out, the drop-path rate rising linearly over the blocks.

NVIDIA's code pads every stride-2 fused-IRB conv with zeros of width 0 (a reported bug: GPUNet-0
maps 320 -> 160 -> 79 -> 39 ...); we use k//2 (320 -> 160 -> 80 -> 40 ...), which costs 2-4% more
MACs and leaves parameter counts unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from timm.layers import BatchNormAct2d, SelectAdaptivePool2d, create_conv2d, get_act_layer
from timm.models._efficientnet_blocks import (
    ConvBnAct,
    EdgeResidual,
    InvertedResidual,
    SqueezeExcite,
)
from timm.models._efficientnet_builder import efficientnet_init_weights
from torch import nn

from gpunet.models.baseline import TimmNetwork
from gpunet.models.init import reset_classifier_init
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec

BN_EPS = 1e-3
BN_MOMENTUM = 0.1  # PyTorch's (and timm's) default: the running statistics average ~10 updates


def build_layer(layer: LayerSpec, drop_path_rate: float = 0.0, bn_momentum: float = BN_MOMENTUM) -> nn.Module:
    """One spec layer -> the matching timm block."""
    act = get_act_layer(layer.act)
    norm_layer = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=bn_momentum)
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


def _classifier(width: int, num_classes: int) -> nn.Module:
    """The last layer: Linear to `num_classes`, or nothing (features out) for 0 classes."""
    return nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()


def build_head(head: HeadSpec, global_pool: str = "avg", bn_momentum: float = BN_MOMENTUM) -> nn.Sequential:
    """The head: 1x1 conv to `head.width` -> BN-ReLU -> global pool -> classifier (GPUNet's
    dropout is functional, before the classifier). Its children are the modules GPUNet runs, so
    the latency table times exactly them."""
    return nn.Sequential(OrderedDict(
        conv_head=create_conv2d(head.in_channels, head.width, 1),
        bn2=BatchNormAct2d(head.width, eps=BN_EPS, momentum=bn_momentum, act_layer=nn.ReLU),
        global_pool=SelectAdaptivePool2d(pool_type=global_pool, flatten=True),
        classifier=_classifier(head.width, head.num_classes)))


class GPUNet(nn.Module):
    """A network of the GPUNet search space, with timm's classifier API."""

    def __init__(self, spec: NetworkSpec, num_classes: int | None = None, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "avg", bn_momentum: float = BN_MOMENTUM) -> None:
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
        self.stem = build_layer(stem, bn_momentum=bn_momentum)
        n = len(body)
        self.blocks = nn.Sequential(*[
            build_layer(layer, drop_path_rate * i / max(n - 1, 1), bn_momentum)
            for i, layer in enumerate(body)])
        self.conv_head, self.bn2, self.global_pool, self.classifier = build_head(
            spec.head, global_pool, bn_momentum)
        efficientnet_init_weights(self)  # timm's (TF EfficientNet's): depthwise fan-out / groups
        reset_classifier_init(self)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.classifier = _classifier(self.num_features, num_classes)

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


def build_model(spec: NetworkSpec | TimmNetwork, **kwargs) -> nn.Module:
    """Spec -> model; kwargs as GPUNet (num_classes, drop_rate, drop_path_rate, bn_momentum). A
    TimmNetwork (a hand-designed baseline) builds timm's model with the same arguments."""
    if isinstance(spec, TimmNetwork):
        return spec.build(**kwargs)
    return GPUNet(spec, **kwargs)
