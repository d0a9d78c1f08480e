"""Model builder, profiling, ONNX export and timm registration of the hub models."""

from gpunet.models.export import export_onnx
from gpunet.models.network import GPUNet, build_head, build_layer, build_model
from gpunet.models.profile import Cost, layer_cost, spec_cost
from gpunet.models.registry import HUB_SPECS, pretrained_cfg_for, register_released, register_spec
from gpunet.models.resolve import resolve_spec

__all__ = ["HUB_SPECS", "Cost", "GPUNet", "build_head", "build_layer", "build_model", "export_onnx",
           "layer_cost", "pretrained_cfg_for", "register_released", "register_spec", "resolve_spec",
           "spec_cost"]
