"""gpunet: latency-tiered neural architecture search for GPUs (NVIDIA's GPUNet, reproduced).

Importing the package registers the hub models with timm (`timm.create_model("gpunet_1")`):
NVIDIA's released GPUNets and every network a finished search added to the hub.
"""

from gpunet.resolvers import register_resolvers

register_resolvers()  # before the imports below: they may load configs

from gpunet.hub.entries import register_hub_models  # noqa: E402
from gpunet.models.registry import register_released  # noqa: E402

__version__ = "0.1.0"

register_released()
register_hub_models()
