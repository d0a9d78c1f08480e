"""The logger group (conf/logger/*.yaml): CSV always, W&B on request.

W&B runs offline unless WANDB_MODE or an API key says otherwise, are grouped by search, and get a
run id derived from the run's output directory, so a resumed trial continues its own W&B run.
"""

from __future__ import annotations

import hashlib
import netrc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

from gpunet.errors import ConfigError


def has_wandb_api_key() -> bool:
    """An API key in WANDB_API_KEY or ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(configured: str | None) -> str:
    """The configured mode, else WANDB_MODE, else online with an API key and offline without."""
    return configured or os.environ.get("WANDB_MODE") or ("online" if has_wandb_api_key() else "offline")


def run_id(output_dir: Path) -> str:
    """A stable W&B id for the run in `output_dir` (a trial's directory is its identity)."""
    return hashlib.sha1(str(output_dir.resolve()).encode()).hexdigest()[:16]


def _wandb(cfg: DictConfig, output_dir: Path, run_config: dict[str, Any], run_name: str) -> list[Logger]:
    return [WandbLogger(
        name=run_name, project=cfg.project, entity=cfg.entity, save_dir=str(output_dir),
        id=cfg.run_id or run_id(output_dir), group=cfg.group or output_dir.parent.name,
        tags=list(cfg.tags), mode=wandb_mode(cfg.mode), config=run_config)]


# the logger group's names: the loggers each adds next to the CSV log
LOGGERS: dict[str, Callable[[DictConfig, Path, dict[str, Any], str], list[Logger]]] = {
    "csv": lambda *args: [], "wandb": _wandb}


def uses_wandb(cfg: DictConfig) -> bool:
    """Whether the logger group logs to W&B (the search then groups its trials' runs and adds a
    summary run)."""
    return cfg.name == "wandb"


def build_loggers(cfg: DictConfig, output_dir: Path, run_config: dict[str, Any],
                  run_name: str) -> list[Logger]:
    """CSV under output_dir/csv/version_N (one version per attempt, so a resume keeps the old
    one), plus what the logger group `cfg.name` adds (LOGGERS)."""
    if cfg.name not in LOGGERS:
        raise ConfigError(f"logger.name={cfg.name!r} is not one of {sorted(LOGGERS)}")
    return [CSVLogger(output_dir, name="csv"), *LOGGERS[cfg.name](cfg, output_dir, run_config, run_name)]
