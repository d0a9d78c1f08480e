"""timm registration of the hub models: `timm.create_model("gpunet_1", num_classes=10)`.

No weights are bundled: `pretrained=True` fails with a clear message; a local checkpoint loads
with `timm.create_model(name, checkpoint_path=...)` (timm loads it with weights_only=True).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model

from gpunet.models.network import GPUNet
from gpunet.space.formats import RELEASED, released_spec
from gpunet.space.spec import NetworkSpec


def pretrained_cfg_for(spec: NetworkSpec, **extra: Any) -> dict[str, Any]:
    """timm's pretrained_cfg for a spec: its resolution, crop_pct 1.0, ImageNet mean/std."""
    r = spec.resolution
    return {"input_size": (3, r, r), "fixed_input_size": False, "crop_pct": 1.0,
            "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "num_classes": spec.head.num_classes, "first_conv": "stem.conv",
            "classifier": "classifier", **extra}


def create_from_spec(variant: str, spec: NetworkSpec, pretrained: bool = False,
                     **kwargs: Any) -> GPUNet:
    """Build a registered model through timm's builder (so pretrained_cfg is attached)."""
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not (overlay.get("file") or overlay.get("url") or overlay.get("hf_hub_id")):
        raise RuntimeError(
            f"no pretrained weights are bundled for {variant!r}; train one with "
            f"`python -m gpunet.train arch={variant}` and load it with "
            f"timm.create_model({variant!r}, checkpoint_path='path/to/checkpoint')")
    if kwargs.pop("features_only", False):
        raise ValueError(f"{variant}: features_only is not supported by gpunet models yet")
    if not kwargs.get("pretrained_cfg"):
        kwargs["pretrained_cfg"] = pretrained_cfg_for(spec)
    return build_model_with_cfg(GPUNet, variant, pretrained, spec=spec, **kwargs)


# Every registered hub model: name -> a function returning its spec (read lazily).
HUB_SPECS: dict[str, Callable[[], NetworkSpec]] = {}


def register_spec(name: str, spec_fn: Callable[[], NetworkSpec]) -> None:
    """Register `name` with timm; the spec is read only when the model is created."""
    if name in HUB_SPECS:
        return
    HUB_SPECS[name] = spec_fn

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> GPUNet:
        return create_from_spec(name, spec_fn(), pretrained, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{name}: a GPUNet network from gpunet's model hub."
    register_model(entrypoint)


def _released(name: str) -> NetworkSpec:
    """A released spec; for the "distill" family (gpunet_d1/d2, not supported yet) gpunet's
    refusal, naming the model asked for, instead of timm's generic "Unknown model"."""
    try:
        return released_spec(name)
    except ValueError as err:
        raise type(err)(f"{name}: {err}") from None


def register_released() -> None:
    for name in RELEASED:  # the distill family too: creating one raises the reason it is refused
        register_spec(name, lambda name=name: _released(name))
