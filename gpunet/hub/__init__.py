"""The latency-tiered model hub."""

from gpunet.hub.table import HubEntry, add_search_result, load_hub, query, register_hub_models

__all__ = ["HubEntry", "add_search_result", "load_hub", "query", "register_hub_models"]
