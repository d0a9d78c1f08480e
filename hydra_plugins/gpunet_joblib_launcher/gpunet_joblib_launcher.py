"""Hydra's joblib launcher with each job's config composed before its worker is free
(`hydra/launcher=gpunet_joblib`, the default of `device=cpu`).

It takes the same config as `hydra/launcher=joblib` (`n_jobs`, `backend`, ... under
`hydra.launcher`) and leaves the same things behind: job numbers, each job's directory with its
`.hydra/` files and log. The one difference is where a job's config is composed. Hydra's launcher
composes it inside the worker process, once the worker has taken the job; this one composes it
in the launching thread of the sweeper and hands the worker the finished config. In an
asynchronous search the sweeper launches one job ahead into the pool's queue (loky's fixed pool of
`n_jobs` processes), so a freed worker starts it at once instead of composing first
(experiments/results/async_schedule.md has the figures). No `from __future__ import
annotations` here: Hydra executes plugin modules outside sys.modules, where dataclasses cannot
resolve string annotations.
"""

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)
# An asynchronous search launches from one thread per job; Hydra's config loader is not
# documented as thread-safe, so compositions take turns (each is a fraction of a second).
_COMPOSE_LOCK = threading.Lock()


@dataclass
class GPUNetJoblibLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.gpunet_joblib_launcher.gpunet_joblib_launcher.GPUNetJoblibLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="gpunet_joblib",
                             node=GPUNetJoblibLauncherConf, provider="gpunet")


def run_composed(config: DictConfig, hydra_context: HydraContext, task_function: TaskFunction,
                 singleton_state: dict[Any, Any]) -> JobReturn:
    """One job, in a worker, from its composed config: run the way Hydra runs every job."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class GPUNetJoblibLauncher(JoblibLauncher):
    def compose(self, overrides: Sequence[str], idx: int) -> DictConfig:
        """Job `idx`'s config, as Hydra's joblib launcher composes it in its worker."""
        assert self.config is not None and self.hydra_context is not None
        with _COMPOSE_LOCK:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = f"{config.hydra.job.name}_{idx}"
            config.hydra.job.num = idx
        return config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        options = {**self.joblib, "backend": "loky"}  # as Hydra's: its threading backend cannot run jobs
        process_joblib_cfg(options)
        log.info("Joblib.Parallel(%s) is launching %d jobs, their configs composed here",
                 ",".join(f"{k}={v}" for k, v in options.items()), len(job_overrides))
        configs = []
        for offset, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + offset, " ".join(filter_overrides(overrides)))
            configs.append(self.compose(overrides, initial_job_idx + offset))
        state = Singleton.get_state()
        return Parallel(**options)(
            delayed(run_composed)(config, self.hydra_context, self.task_function, state)
            for config in configs)
