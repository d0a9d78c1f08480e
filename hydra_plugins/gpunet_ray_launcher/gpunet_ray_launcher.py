"""A Hydra launcher on Ray's public API (`hydra/launcher=gpunet_ray`): one Ray task per job.

    python -m gpunet.search hydra/launcher=gpunet_ray hydra.launcher.ray.init.address=HEAD:6379 \
        hydra.launcher.ray.remote.num_gpus=1

Why not hydra-ray-launcher: its last release (1.2.2) sets `object_store_memory` on every
`ray.init`, which current Ray refuses when joining a running cluster ("When connecting to an
existing cluster, object_store_memory must not be provided"), and it pins cloudpickle<3, which
forces joblib back below 1.6 (the joblib launcher's). This one keeps its config layout
(`ray.init.*` for `ray.init`, `ray.remote.*` for each task's resources), so commands carry over.

Each job runs as Hydra's own launchers run it (`run_job`): its config is composed in the worker
from the sweep config and the job's overrides, `hydra.job.num` is its job number and
`hydra.job.id` the Ray task id, and it writes its `.hydra/` files and log to its own directory.
The worker first changes to the sweeper's working directory when that exists there (a shared
filesystem, as on SLURM), so relative paths mean the same thing. A task that dies without
returning (its worker crashed, its node was lost, after Ray's retries) comes back as a failed
job carrying Ray's error, like a job that raised. No `from __future__ import annotations` here:
Hydra executes plugin modules outside sys.modules, where dataclasses cannot resolve string
annotations.
"""

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
_INIT_LOCK = threading.Lock()  # an asynchronous search launches jobs from several threads


@dataclass
class RayConf:
    # keyword arguments of ray.init, called once by the sweeper. address: "HOST:PORT" or "auto"
    # joins a running cluster (whose nodes bring their own resources); "local" starts a new Ray
    # instance inside the sweeper, sized by num_cpus / num_gpus; null is Ray's default (RAY_ADDRESS,
    # else the cluster last started on this machine with `ray start`, else a new local instance).
    # Add others with +hydra.launcher.ray.init.<key>=...
    init: dict[str, Any] = field(default_factory=lambda: {"address": None, "num_cpus": None,
                                                          "num_gpus": None})
    # ray.remote options of each job: the CPUs and GPUs one job holds while it runs (num_gpus=1:
    # one GPU per candidate; Ray sets CUDA_VISIBLE_DEVICES for it). Add others (max_retries,
    # memory, resources, runtime_env, ...) with +hydra.launcher.ray.remote.<key>=...
    remote: dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1, "num_gpus": 0})


@dataclass
class GPUNetRayLauncherConf:
    _target_: str = "hydra_plugins.gpunet_ray_launcher.gpunet_ray_launcher.GPUNetRayLauncher"
    ray: RayConf = field(default_factory=RayConf)


ConfigStore.instance().store(group="hydra/launcher", name="gpunet_ray", node=GPUNetRayLauncherConf,
                             provider="gpunet")


def _present(options: Any) -> dict[str, Any]:
    """Options without the unset (null) ones: ray.init refuses resource arguments, even None
    ones in some versions, when it joins a running cluster."""
    plain = OmegaConf.to_container(options, resolve=True) if OmegaConf.is_config(options) else options
    return {k: v for k, v in (plain or {}).items() if v is not None}


def execute_job(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
                task_function: TaskFunction, singleton_state: dict[Any, Any], cwd: str) -> JobReturn:
    """One job, in a Ray worker: compose its config and run it the way Hydra runs every job."""
    import ray

    if os.path.isdir(cwd):
        os.chdir(cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = ray.get_runtime_context().get_task_id()
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class GPUNetRayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context
        self._ensure_ray()  # here, in the sweeper's main thread (see _ensure_ray)

    def _ensure_ray(self) -> None:
        """Join the cluster, or start the local instance, once per process. Before the first
        launch: an asynchronous search launches every job from a thread of its own, and Ray
        ties a local instance's processes to the thread that started them (Linux's parent-death
        signal follows the creating thread), so an instance started there dies with that job."""
        try:
            import ray
        except ImportError as err:
            raise ImportError("hydra/launcher=gpunet_ray needs Ray: pip install -e '.[cluster]' "
                              "(or pip install 'ray>=2.9')") from err

        with _INIT_LOCK:
            if not ray.is_initialized():
                init = _present(self.ray_cfg.init)
                log.info("ray.init(%s)", ", ".join(f"{k}={v!r}" for k, v in init.items()))
                ray.init(**init)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        self._ensure_ray()
        remote = _present(self.ray_cfg.remote)
        task = ray.remote(**remote)(execute_job)
        log.info("Ray is launching %d jobs (%s each; the cluster has %s)", len(job_overrides),
                 ", ".join(f"{k}={v}" for k, v in remote.items()), ray.cluster_resources())
        state, cwd = Singleton.get_state(), os.getcwd()
        refs = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            refs.append(task.remote(idx, list(overrides), self.hydra_context, self.config,
                                    self.task_function, state, cwd))
        returns: list[JobReturn] = []
        for overrides, ref in zip(job_overrides, refs):
            try:
                returns.append(ray.get(ref))
            except ray.exceptions.RayError as err:  # the task died without a JobReturn
                log.error("a Ray job died: %s", err)
                returns.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                                         _return_value=err))
        return returns
