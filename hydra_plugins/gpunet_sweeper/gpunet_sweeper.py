"""Hydra's entry point for the gpunet sweeper (`hydra/sweeper=gpunet`).

Hydra discovers sweepers only in the `hydra_plugins` namespace; the implementation lives in
`gpunet.search.sweeper` and is imported only when a sweep starts. (No `from __future__ import
annotations` here: Hydra executes this module outside sys.modules, where dataclasses cannot
resolve string annotations.)
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class GPUNetSweeperConf:
    """The search's knobs are in the app config under `search:`, not here."""

    _target_: str = "hydra_plugins.gpunet_sweeper.gpunet_sweeper.GPUNetSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="gpunet", node=GPUNetSweeperConf,
                             provider="gpunet")


class GPUNetSweeper(Sweeper):
    def __init__(self) -> None:
        from gpunet.search.sweeper import SearchSweeper

        self._impl = SearchSweeper()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from gpunet.errors import one_line_errors

        with one_line_errors():  # the search app's edge: its jobs' errors are trials' errors
            return self._impl.sweep(arguments)
