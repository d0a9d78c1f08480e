"""The gpunet Hydra sweeper: runs one search per point of the override grid.

Hydra loads the thin shim in `hydra_plugins/gpunet_sweeper`, which imports this lazily. Every
knob of the search lives in the app's config under `search:` (so it shows in `--cfg job` and an
ablation can vary it); the sweeper config itself only names this class.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from gpunet.search.grid import grid_points
from gpunet.search.loop import TooManyFailures, run_search
from gpunet.search.outputs import write_comparison, write_outputs

log = logging.getLogger(__name__)


def launcher_parallelism(launcher_cfg: DictConfig) -> int:
    """How many jobs the configured launcher runs at once (the search's batch size)."""
    for key in ("n_jobs", "array_parallelism"):
        value = launcher_cfg.get(key)
        if value is not None:
            return os.cpu_count() or 1 if int(value) < 0 else max(1, int(value))
    return 1


class SearchSweeper(Sweeper):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        points = grid_points(arguments)
        results: dict[str, list] = {}
        for point in points:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                     list(point.overrides))
            search_dir = sweep_dir if len(points) == 1 else sweep_dir / point.label
            search_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, search_dir / "search.yaml", resolve=False)
            batch = int(cfg.search.batch_size or launcher_parallelism(cfg.hydra.launcher))
            log.info("search %s in %s (batch size %d)", point.label, search_dir, batch)
            try:
                trials = run_search(cfg, point.overrides, search_dir, self.launcher, batch)
            except TooManyFailures as stop:
                write_outputs(search_dir, stop.trials, cfg)  # keep what ran, then stop
                raise
            best = write_outputs(search_dir, trials, cfg)
            if cfg.logger.name == "wandb":
                from gpunet.search.wandb_summary import log_search_summary

                log_search_summary(cfg, search_dir, trials, best)
            if best is not None and cfg.objective.name == "train" and cfg.hub.add:
                from gpunet.hub.table import add_search_result

                add_search_result(cfg, best)
            results[point.label] = trials
        if len(points) > 1:
            write_comparison(sweep_dir, results)
        return results
