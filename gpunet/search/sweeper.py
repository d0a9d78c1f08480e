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

import torch
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from gpunet.checks import check_search
from gpunet.config import plain
from gpunet.errors import ConfigError
from gpunet.search.grid import GridPoint, grid_label, grid_points
from gpunet.search.identity import fingerprint
from gpunet.search.loop import TooManyFailures, check_journal, load_tier_pool, open_journal, run_search
from gpunet.search.objectives import trains
from gpunet.search.outputs import OutputSettings, write_comparison, write_outputs
from gpunet.search.summary import (
    format_comparison,
    format_summary,
    hub_line,
    report,
    resume_line_on_interrupt,
)
from gpunet.train.loggers import uses_wandb

log = logging.getLogger(__name__)


def launcher_parallelism(launcher_cfg: DictConfig) -> int:
    """How many jobs the configured launcher runs at once: joblib's n_jobs (-1: every CPU),
    submitit's array_parallelism, a Ray launcher's CPUs (GPUs when jobs take GPUs) divided by
    each job's; 1 otherwise (the basic launcher runs one job at a time)."""
    for key in ("n_jobs", "array_parallelism"):
        value = launcher_cfg.get(key)
        if value is not None:
            return os.cpu_count() or 1 if int(value) < 0 else max(1, int(value))
    ray = launcher_cfg.get("ray")
    if ray is None:
        return 1
    init, remote = ray.get("init") or {}, ray.get("remote") or {}
    kind = "num_gpus" if remote.get("num_gpus") else "num_cpus"
    total = init.get(kind)
    if total is None:  # Ray's default: this machine's resources, unless it joins a cluster
        if init.get("address") not in (None, "local"):
            log.warning("the sweeper cannot see the size of the Ray cluster at %s: set "
                        "search.batch_size to the number of jobs it runs at once", init.address)
        total = (torch.cuda.device_count() if kind == "num_gpus" else os.cpu_count()) or 1
    return max(1, int(total // max(1, remote.get(kind) or 1)))


def choose_batch_size(cfg: DictConfig) -> tuple[int, str]:
    """Candidates per round and why. `search.batch_size` when set; otherwise the launcher's
    parallelism, capped so that the searcher's model chooses most of the budget: no batch larger
    than its random start (n_init) or a quarter of the trials. (A SLURM array of 256 would else
    make the first round the whole budget, chosen at random.)"""
    n_trials = int(cfg.search.n_trials)
    if cfg.search.batch_size is not None:
        return int(cfg.search.batch_size), "search.batch_size"
    workers = launcher_parallelism(cfg.hydra.launcher)
    caps = {"a quarter of search.n_trials": max(1, n_trials // 4)}
    if cfg.searcher.get("n_init") is not None:
        from gpunet.search.searchers import resolve_n_init

        caps["searcher.n_init"] = max(1, int(resolve_n_init(cfg.searcher.n_init, n_trials)))
    cap_name, cap = min(caps.items(), key=lambda item: item[1])
    if workers <= cap:
        return workers, f"the launcher runs {workers} job(s) at once"
    return cap, f"the launcher runs {workers} at once, capped at {cap_name}"


def is_asynchronous(cfg: DictConfig, launcher: Any) -> bool:
    """search.asynchronous, where `auto` means every launcher but the basic one (which runs jobs
    one at a time inside the sweeper's process, so there is nothing to overlap)."""
    setting = cfg.search.asynchronous
    basic = type(launcher).__name__ == "BasicLauncher"
    if setting == "auto":
        return not basic
    if not isinstance(setting, bool):
        raise ConfigError(f"search.asynchronous={setting!r}; allowed are auto, true, false")
    if setting and basic:
        raise ConfigError("search.asynchronous=true needs a launcher that runs jobs concurrently "
                          "(hydra/launcher=joblib, submitit_local, submitit_slurm, ray); the basic "
                          "launcher runs them one at a time in the sweeper's process")
    return setting


def queues_ahead(cfg: DictConfig, launcher: Any, batch_size: int) -> bool:
    """Whether the launcher can hold one job beyond the batch without running it at once.
    The joblib launchers (Hydra's, and gpunet_joblib) run every job on one fixed pool of n_jobs
    worker processes (loky's), so when the batch fills it, a job launched early waits in that
    pool's queue and starts the moment a worker frees, its dispatch (and with gpunet_joblib its
    config) already done. Others (submitit, Ray) would start it at once, beyond the batch."""
    joblib = any(kind.__name__ == "JoblibLauncher" for kind in type(launcher).__mro__)
    return joblib and batch_size == launcher_parallelism(cfg.hydra.launcher)


def _user_set_sweep_dir(config: DictConfig) -> bool:
    return any(o.startswith("hydra.sweep.dir=") for o in config.hydra.overrides.hydra)


def search_dirs(config: DictConfig, points: list[GridPoint], configs: list[DictConfig]
                ) -> tuple[list[Path], Path | None]:
    """Where each search of the grid runs, and where a grid's comparison goes (None: one search).

    A search runs in its own resolved `hydra.sweep.dir`, named after what it is (space, device,
    backend, tier, objective, searcher, seed), so a grid point and the single command with the
    same values are the same search. A grid never writes into a search's directory: its
    comparison goes to `grid-<the swept values>` beside them. When the user fixed the directory,
    or points would share one, each point's name ends with its values."""
    if len(points) == 1:
        return [Path(configs[0].hydra.sweep.dir)], None
    base = Path(config.hydra.sweep.dir)
    dirs = [Path(cfg.hydra.sweep.dir) for cfg in configs]
    if _user_set_sweep_dir(config):
        return [base / p.label for p in points], base
    if len(set(dirs)) < len(dirs):
        dirs = [d.with_name(f"{d.name}--{p.label}") for d, p in zip(dirs, points)]
    return dirs, base.parent / f"grid-{grid_label(points)}"


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
        self.current_dir: Path | None = None  # the search running now: Ctrl-C or SIGTERM names its journal
        with resume_line_on_interrupt(lambda: self.current_dir):
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        points = grid_points(arguments)
        configs = [self.hydra_context.config_loader.load_sweep_config(self.config, list(p.overrides))
                   for p in points]
        for cfg in configs:  # nonsense numbers are refused before anything is built or written
            check_search(cfg)
        dirs, grid_dir = search_dirs(self.config, points, configs)
        results: dict[str, list] = {}
        bests: dict[str, dict[str, Any] | None] = {}
        for point, cfg, search_dir in zip(points, configs, dirs):
            self.current_dir = search_dir
            batch, why = choose_batch_size(cfg)
            asynchronous = is_asynchronous(cfg, self.launcher)
            queue_ahead = asynchronous and queues_ahead(cfg, self.launcher, batch)
            check_journal(cfg, search_dir)  # refuses another search's directory, before any build
            pool = load_tier_pool(cfg)  # an empty tier or a bad table leaves no directory behind
            search_dir.mkdir(parents=True, exist_ok=True)
            journal = open_journal(cfg, search_dir)
            OmegaConf.save(cfg, search_dir / "search.yaml", resolve=False)
            with open_dict(self.config):  # launchers create (and submitit fills) their
                self.config.hydra.sweep.dir = str(search_dir)  # configured sweep dir: this one
            log.info("search%s in %s: batch size %d (%s), %s",  # a grid's points say which they are
                     f" {point.label}" if len(points) > 1 else "", search_dir, batch, why,
                     f"asynchronous: {batch} jobs in flight{', 1 more queued' if queue_ahead else ''}"
                     if asynchronous else "synchronous rounds")
            outputs = OutputSettings.from_config(cfg)
            n_trials, training = int(cfg.search.n_trials), trains(cfg.objective)
            hub = {"objective": str(cfg.objective.name), "trains": training, "hub_add": bool(cfg.hub.add)}
            try:
                trials = run_search(cfg, point.overrides, search_dir, self.launcher, batch,
                                    pool=pool, journal=journal, asynchronous=asynchronous,
                                    queue_ahead=queue_ahead)
            except TooManyFailures as stop:
                best = write_outputs(search_dir, stop.trials, outputs, self.launcher,
                                     point.overrides)  # keep what ran
                why_stopped = "too many failed trials"
                report(search_dir, format_summary(search_dir, stop.trials, n_trials, outputs.metric, best,
                                                  hub_line(best, **hub, stopped=why_stopped), why_stopped))
                raise
            best = write_outputs(search_dir, trials, outputs, self.launcher, point.overrides)
            if uses_wandb(cfg.logger):
                from gpunet.search.wandb_summary import log_search_summary, plain_config

                log_search_summary(cfg.logger, plain_config(cfg), search_dir, trials, best)
            update = None
            if best is not None and training and cfg.hub.add:
                from gpunet.hub.entries import SearchOrigin, add_search_result

                origin = SearchOrigin(str(cfg.search_space.name), str(cfg.device.name), str(cfg.tier.name),
                                      str(cfg.data.name), str(cfg.latency.name),
                                      f"{cfg.recipe.name}-{fingerprint(plain(cfg.recipe))}")
                update = add_search_result(best, origin, Path(cfg.hub.dir).expanduser())
            report(search_dir, format_summary(search_dir, trials, n_trials, outputs.metric, best,
                                              hub_line(best, **hub, update=update)))
            results[str(search_dir)], bests[search_dir.name] = trials, best
        if grid_dir is not None:  # made once every search ran: a failed grid leaves none
            grid_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, grid_dir / "multirun.yaml")
            write_comparison(grid_dir, {d.name: results[str(d)] for d in dirs}, bests)
            print(format_comparison(grid_dir, len(dirs)), flush=True)
        return results
