"""`python -m gpunet.search`: the two-stage GPUNet search (paper §3, Fig. 2) as a Hydra app.

It runs in multirun mode with the gpunet sweeper (conf/search.yaml): the sweeper makes sure the
latency table exists, takes the tier's pool, and hands candidates to the Hydra launcher; each
job lands in `main` below and evaluates one candidate.

    python -m gpunet.search searcher=lamcts_bo tier=1ms
    python -m gpunet.search searcher=lamcts_bo,random seed=0,1,2          # an ablation grid
    python -m gpunet.search objective=ackley search.n_trials=50           # a fast synthetic run
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from gpunet import console
from gpunet.paths import CONF_DIR
from gpunet.search.job import run_trial

console.setup()  # the sweeper's process: before Hydra loads the sweeper (and BoTorch)


@hydra.main(config_path=str(CONF_DIR), config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    console.setup()  # again in the job's own process (a joblib, SLURM or Ray worker)
    return run_trial(cfg)


if __name__ == "__main__":
    main()
