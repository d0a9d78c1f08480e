"""Choose a batch from candidate encodings with a GP and qLogNEI (BoTorch), at bounded cost.

Shared by `bo` (candidates drawn from the whole remaining pool) and `lamcts_bo` (candidates
drawn from the selected region). Cost is bounded by capping the GP's training set, the L-BFGS
iterations of the hyper-parameter fit, the number of candidates scored and the MC samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf_discrete
from botorch.sampling import SobolQMCNormalSampler
from gpytorch.mlls import ExactMarginalLogLikelihood

from gpunet.search.searchers.base import require_ints


@dataclass(frozen=True)
class GPSettings:
    """Knobs of the GP step (see conf/searcher/bo.yaml for what each one trades)."""

    n_init: int = 20
    max_train: int = 128
    fit_maxiter: int = 30
    n_candidates: int = 1000
    mc_samples: int = 64

    def __post_init__(self) -> None:
        require_ints(
            self, {"n_init": 1, "max_train": 2, "fit_maxiter": 1, "n_candidates": 1, "mc_samples": 1}
        )


def normalise(encodings: np.ndarray, cardinalities: np.ndarray) -> np.ndarray:
    """Digits scaled to [0, 1] by their cardinality (a single-choice digit maps to 0)."""
    return encodings / np.maximum(np.asarray(cardinalities) - 1, 1)


def cap_training_set(values: np.ndarray, max_train: int, rng: np.random.Generator) -> np.ndarray:
    """Positions to train on: all if few, else the best half of the cap plus a random rest.

    Keeping the best points keeps the model accurate where the acquisition looks; the random
    rest keeps it honest elsewhere.
    """
    n = values.size
    if n <= max_train:
        return np.arange(n)
    n_best = max_train // 2
    order = np.argsort(-values, kind="stable")
    rest = rng.choice(order[n_best:], size=max_train - n_best, replace=False)
    return np.concatenate([order[:n_best], np.sort(rest)])


def fit_gp(train_x: torch.Tensor, train_y: torch.Tensor, fit_maxiter: int) -> SingleTaskGP:
    """SingleTaskGP with standardised outcomes; raises ModelFittingError if fitting fails."""
    model = SingleTaskGP(train_x, train_y, outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max-iteration notices are the point of fit_maxiter
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": fit_maxiter}})
    return model


def select_batch(
    train_x: np.ndarray,
    train_y: np.ndarray,
    candidates: np.ndarray,
    pending_x: np.ndarray,
    q: int,
    settings: GPSettings,
    seed: int,
) -> np.ndarray | None:
    """Positions (into `candidates`) of the q candidates maximising joint qLogNEI.

    All inputs are already normalised to [0, 1]; `candidates` must be distinct rows and more
    than q of them. Returns None when the GP cannot be fitted, so callers can fall back.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.as_tensor(train_x, dtype=torch.double)
        y = torch.as_tensor(train_y, dtype=torch.double).unsqueeze(-1)
        try:
            model = fit_gp(x, y, settings.fit_maxiter)
        except ModelFittingError:
            return None
        acq = qLogNoisyExpectedImprovement(
            model,
            X_baseline=x,
            sampler=SobolQMCNormalSampler(torch.Size([settings.mc_samples]), seed=seed),
            X_pending=torch.as_tensor(pending_x, dtype=torch.double) if len(pending_x) else None,
        )
        choices = torch.as_tensor(candidates, dtype=torch.double)
        chosen, _ = optimize_acqf_discrete(acq, q=q, choices=choices, unique=True)
    return _positions_of(chosen.numpy(), candidates)


def _positions_of(rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Map chosen rows back to their positions among the (distinct) candidate rows."""
    position = {row.tobytes(): i for i, row in enumerate(candidates)}
    return np.array([position[row.tobytes()] for row in rows], dtype=np.int64)
