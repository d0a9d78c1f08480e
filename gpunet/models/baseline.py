"""A hand-designed timm network trained and timed exactly like a searched candidate.

The paper's Table 3 compares GPUNets with EfficientNet, RegNet, ResNet and others at equal measured
latency. `TimmNetwork` lets the training (`gpunet.train.run.fit`) and the latency backends take
such a network where they take a NetworkSpec: the same recipe, data, input size and classifier
width (`num_classes`), so the only difference is the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
from torch import nn

from gpunet.errors import ConfigError
from gpunet.models.init import reset_classifier_init


@dataclass(frozen=True)
class TimmNetwork:
    """timm's `model` (any name `timm.list_models()` gives), seen at `resolution` x `resolution`."""

    model: str
    resolution: int

    def __post_init__(self) -> None:
        if self.model not in timm.list_models():
            raise ConfigError(f"timm has no model {self.model!r} (timm.list_models() names them)")

    @property
    def name(self) -> str:
        return self.model

    def build(self, num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
              bn_momentum: float | None = None) -> nn.Module:
        """Randomly initialised (no pretrained weights: a candidate starts from none either), with
        the recipe's BatchNorm momentum on every BatchNorm layer and a candidate's classifier init."""
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        model = timm.create_model(self.model, pretrained=False, num_classes=num_classes,
                                  drop_rate=drop_rate, **kwargs)
        if bn_momentum is not None:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.momentum = bn_momentum
        reset_classifier_init(model)
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"timm_model": self.model, "resolution": self.resolution}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimmNetwork:
        return cls(str(data["timm_model"]), int(data["resolution"]))
