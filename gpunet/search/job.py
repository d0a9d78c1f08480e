"""One job of a search, in a worker: evaluate one candidate (train it, or a synthetic objective),
or measure the best network's end-to-end latency (`trial.kind=latency`).

This runs wherever the Hydra launcher puts it (a local process, a SLURM node, a Ray worker), so
it only reads its composed config and returns a plain dict the sweeper records. The latency
kind lets a sweeper that runs where the device is not (a CPU login node) measure on the nodes
that have it.
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


TRIAL_KINDS = ("candidate", "latency")


def measure_latency(cfg: DictConfig) -> dict[str, Any]:
    """The end-to-end latency of `cfg.trial.encoding` (head of `trial.num_classes`, else the
    data's classes) with cfg's device and backend, and the context it was measured in."""
    from gpunet.latency.backends import BackendUnavailable
    from gpunet.latency.build import head_classes, measure_network_context

    start = time.perf_counter()
    space = space_from_config(cfg.search_space)
    num_classes = int(cfg.trial.get("num_classes") or head_classes(cfg))
    spec = encoding_to_spec(space, [int(x) for x in cfg.trial.encoding], num_classes=num_classes)
    try:
        ms, context = measure_network_context(spec, cfg)
    except BackendUnavailable as err:
        return {"status": "failed", "error": f"{type(err).__name__}: {err}",
                "duration_s": time.perf_counter() - start}
    return {"status": "completed", "measured_latency_ms": float(ms), "context": context,
            "duration_s": time.perf_counter() - start}


def run_trial(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.trial.encoding`; failures come back as a status, not an exception.

    `trial.kind` (absent: candidate) says what the job does: evaluate a candidate, or measure
    its end-to-end latency (`latency`, see `measure_latency`)."""
    if cfg.trial.encoding is None:
        raise ValueError("a search job needs trial.encoding: run `python -m gpunet.search` "
                         "(multirun with the gpunet sweeper), not a single job")
    kind = cfg.trial.get("kind") or "candidate"
    if kind not in TRIAL_KINDS:
        raise ValueError(f"trial.kind={kind!r} is not one of {list(TRIAL_KINDS)}")
    if kind == "latency":
        return measure_latency(cfg)
    start, started_at = time.perf_counter(), time.time()
    space = space_from_config(cfg.search_space)
    encoding = [int(x) for x in cfg.trial.encoding]
    if cfg.objective.name == "train":
        from gpunet.latency.build import head_classes
        from gpunet.train.run import fit_candidate

        head_classes(cfg)  # data.num_classes agrees with the class folders, before training
        spec = encoding_to_spec(space, encoding)  # the head is sized by the data's classes
        result = fit_candidate(cfg, spec, Path(HydraConfig.get().runtime.output_dir))
        out = {"status": result.status, "value": result.best_top1, "curve": list(result.curve),
               "error": result.error, "epochs": result.epochs, "num_classes": result.num_classes}
    else:
        out = {"status": "completed", "value": evaluate(cfg.objective, encoding, space.cardinalities),
               "curve": [], "error": None}
    # when it ran (wall clock), so schedules can be checked: overlap, idle workers
    out.update(duration_s=time.perf_counter() - start, started_at=started_at, ended_at=time.time())
    return out
