"""The latency-tiered model hub."""

from gpunet.hub.entries import HubEntry, HubUpdate, add_search_result, load_hub, query, register_hub_models

__all__ = ["HubEntry", "HubUpdate", "add_search_result", "load_hub", "query", "register_hub_models"]
