"""One job of a search: evaluate one candidate (train it, or a synthetic objective) in a worker.

This runs wherever the Hydra launcher puts it (a local process, a SLURM node, a Ray worker), so
it only reads its composed config and returns a plain dict the sweeper records in the journal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gpunet.space import encoding_to_spec, space_from_config


def evaluate(objective: DictConfig, encoding: list[int], cardinalities: np.ndarray) -> float:
    """A synthetic objective by name, or any `_target_` callable (encoding, cardinalities) -> value
    (a surrogate, a predictor, a test double)."""
    if objective.get("_target_"):
        return float(hydra.utils.get_method(objective._target_)(encoding, cardinalities))
    from gpunet.search.objectives import evaluate_objective

    return float(evaluate_objective(objective, encoding, cardinalities))


def run_trial(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.trial.encoding`; failures come back as a status, not an exception."""
    if cfg.trial.encoding is None:
        raise ValueError("a search job needs trial.encoding: run `python -m gpunet.search` "
                         "(multirun with the gpunet sweeper), not a single job")
    start = time.perf_counter()
    space = space_from_config(cfg.search_space)
    encoding = [int(x) for x in cfg.trial.encoding]
    if cfg.objective.name == "train":
        from gpunet.train.run import fit_candidate

        spec = encoding_to_spec(space, encoding)  # the head is sized by the data's classes
        result = fit_candidate(cfg, spec, Path(HydraConfig.get().runtime.output_dir))
        out = {"status": result.status, "value": result.best_top1, "curve": list(result.curve),
               "error": result.error, "epochs": result.epochs, "num_classes": result.num_classes}
    else:
        out = {"status": "completed", "value": evaluate(cfg.objective, encoding, space.cardinalities),
               "curve": [], "error": None}
    out["duration_s"] = time.perf_counter() - start
    return out
