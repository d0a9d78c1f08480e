"""A W&B summary run per search (`logger=wandb`): the trials table, the best network, the plots.

The trials' own training runs are grouped under the same W&B group (the search's directory name)
by the job overrides, so the dashboard shows one search as one group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gpunet.config import plain
from gpunet.search.journal import Trial
from gpunet.search.outputs import CSV_FIELDS, measured_latencies, result_rows
from gpunet.train.loggers import run_id, wandb_mode


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The app's config as a plain dict, without Hydra's own node (what the summary run records)."""
    return plain(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))


def log_search_summary(logger: DictConfig, run_config: dict[str, Any], search_dir: Path,
                       trials: list[Trial], best: dict[str, Any] | None) -> None:
    """The summary run of a search, with the logger group's W&B settings; `run_config` is what it
    records as its config (`plain_config` of the search's)."""
    import wandb

    run = wandb.init(project=logger.project, entity=logger.entity, group=search_dir.name,
                     name=f"{search_dir.name}-summary", job_type="search-summary",
                     id=run_id(search_dir / "summary"), resume="allow", dir=str(search_dir),
                     mode=wandb_mode(logger.mode), tags=list(logger.tags),
                     config=run_config)
    try:
        rows = result_rows(trials, measured_latencies(best))
        table = wandb.Table(columns=CSV_FIELDS, data=[[row[c] for c in CSV_FIELDS] for row in rows])
        images = {name: wandb.Image(str(search_dir / f"{name}.png"))
                  for name in ("convergence", "latency_vs_accuracy")
                  if (search_dir / f"{name}.png").exists()}
        run.log({"trials": table, **images})
        run.summary.update({"n_trials": sum(t.finished for t in trials),
                            "n_failed": sum(t.status == "failed" for t in trials)})
        if best is not None:
            run.summary.update({f"best/{k}": v for k, v in best.items() if k != "spec"})
    finally:
        wandb.finish()
