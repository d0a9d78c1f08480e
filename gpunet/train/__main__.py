"""`python -m gpunet.train arch=gpunet_1 data=imagefolder data.root=/data/imagenet recipe=gpunet`

Trains one network (a hub name, an encoding of `search_space`, or a spec JSON) and prints and
returns its best val top-1, so Hydra multirun sweeps (`-m recipe.lr=0.03,0.06`) can compare them.
With several devices (DDP) every rank logs its result and rank 0 alone prints it.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gpunet import console
from gpunet.checks import check_train
from gpunet.errors import RunFailed, one_line_errors
from gpunet.models import resolve_spec
from gpunet.paths import CONF_DIR
from gpunet.space import space_from_config
from gpunet.train.run import fit_candidate

log = logging.getLogger(__name__)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    console.setup()  # known-harmless warnings filtered, the others to the log
    # An error of ours ends a run in one line (any other keeps its traceback); in a multirun (-m)
    # Hydra records each job's error and still runs the other jobs, as before.
    single = HydraConfig.get().mode != RunMode.MULTIRUN
    with one_line_errors() if single else nullcontext():
        return train(cfg)


def train(cfg: DictConfig) -> float | None:
    check_train(cfg)
    spec = resolve_spec(cfg.arch, space_from_config(cfg.search_space))
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    result = fit_candidate(cfg, spec, output_dir)
    if result.status == "failed":
        raise RunFailed(f"training {cfg.arch} failed after {result.epochs} epochs: {result.error}")
    log.info("%s: %s after %d epochs (checkpoint %s, best epoch's weights %s)", cfg.arch, result.status,
             result.epochs, result.checkpoint, result.best_weights)
    log.info("rank %d of %d: best val top-1 %s, curve %s", result.rank, result.world_size,
             result.best_top1, result.curve)
    if result.rank == 0:
        print(f"best_val_top1={result.best_top1:.4f}")
    return result.best_top1


if __name__ == "__main__":
    main()
