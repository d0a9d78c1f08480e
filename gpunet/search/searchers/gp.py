"""Choose a batch from candidate encodings with a GP and qLogNEI (BoTorch), at bounded cost.

Shared by `bo` (candidates drawn from the whole remaining pool) and `lamcts_bo` (candidates
drawn from the selected region). Cost is bounded by capping the GP's training set, the L-BFGS
iterations of the hyper-parameter fit (and how often it runs), the number of candidates scored
and the MC samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition.analytic import _log_ei_helper  # log EI of a standard score, stable
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.kernels.categorical import CategoricalKernel
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf_discrete
from botorch.sampling import SobolQMCNormalSampler
from gpytorch.mlls import ExactMarginalLogLikelihood

from gpunet.search.searchers.base import AUTO, require_ints

Hyperparameters = dict[str, torch.Tensor]
KERNELS = ("ordinal", "categorical")  # how the GP compares two encodings (GPSettings.kernel)


@dataclass(frozen=True)
class GPSettings:
    """Knobs of the GP step (see conf/searcher/bo.yaml for what each one trades)."""

    n_init: int | str = "auto"  # resolved by the searcher (base.resolve_n_init)
    max_train: int = 128
    fit_maxiter: int = 30
    refit_every: int = 8
    n_candidates: int = 500
    mc_samples: int = 64
    n_generated: int = 1000
    screened_per_row: int = 1000
    kernel: str = "ordinal"

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel is {self.kernel!r}; choose one of {KERNELS}")
        require_ints(
            self,
            {
                **({} if self.n_init == AUTO else {"n_init": 1}),
                "max_train": 2,
                "fit_maxiter": 1,
                "refit_every": 1,
                "n_candidates": 1,
                "mc_samples": 1,
                "n_generated": 0,
                "screened_per_row": 0,
            },
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


def build_gp(
    train_x: np.ndarray, train_y: np.ndarray, hyperparameters: Hyperparameters | None = None,
    kernel: str = "ordinal",
) -> SingleTaskGP:
    """SingleTaskGP on normalised inputs with standardised outcomes, optionally with given
    hyper-parameters (the outcome standardisation always comes from `train_y`).
    `kernel`: ordinal (BoTorch's default RBF on the digits scaled to [0, 1]: choice 2 is nearer
    choice 1 than choice 0) or categorical (exp(-mean over digits of [digit differs] / its
    lengthscale): every other choice of a digit is equally far, the Hamming view)."""
    model = SingleTaskGP(
        torch.as_tensor(train_x, dtype=torch.double),
        torch.as_tensor(train_y, dtype=torch.double).unsqueeze(-1),
        outcome_transform=Standardize(m=1),
        covar_module=CategoricalKernel(ard_num_dims=train_x.shape[1]) if kernel == "categorical" else None,
    )
    if hyperparameters is not None:
        model.load_state_dict(hyperparameters, strict=False)
    return model.eval()


def fit_hyperparameters(
    train_x: np.ndarray, train_y: np.ndarray, fit_maxiter: int, seed: int, kernel: str = "ordinal"
) -> Hyperparameters | None:
    """Maximum-marginal-likelihood GP hyper-parameters, or None when fitting fails."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_gp(train_x, train_y, kernel=kernel).train()
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # max-iteration notices are the point of maxiter
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": fit_maxiter}})
        except ModelFittingError:
            return None
    state = model.state_dict()
    return {k: v for k, v in state.items() if not k.startswith("outcome_transform.")}


def screen(model: SingleTaskGP, candidates: np.ndarray, keep: int, chunk: int = 1024) -> np.ndarray:
    """Positions (ascending) of the `keep` candidates of highest analytic log-EI.

    The joint qLogNEI step costs MC samples x q per candidate, the analytic EI one posterior, so
    this screen lets the GP look at far more of a region than the joint step could afford; the
    incumbent is the best posterior mean at the training inputs (the values are noisy).
    Posteriors go in flat chunks: BoTorch's LogExpectedImprovement wants one batch per point,
    which recomputes the training kernel for every candidate (7x slower at 20,000).
    """
    if len(candidates) <= keep:
        return np.arange(len(candidates))
    with torch.no_grad():
        best = model.posterior(model.train_inputs[0]).mean.max()
        scores = []
        for part in torch.as_tensor(candidates, dtype=torch.double).split(chunk):
            posterior = model.posterior(part)
            sigma = posterior.variance.clamp_min(1e-12).sqrt().squeeze(-1)
            mean = posterior.mean.squeeze(-1)
            scores.append(_log_ei_helper((mean - best) / sigma) + sigma.log())
    order = np.argsort(-torch.cat(scores).numpy(), kind="stable")
    return np.sort(order[:keep])


def select_batch(
    model: SingleTaskGP,
    candidates: np.ndarray,
    pending_x: np.ndarray,
    q: int,
    mc_samples: int,
    seed: int,
) -> np.ndarray:
    """Positions (into `candidates`) of the q candidates maximising joint qLogNEI.

    Inputs are normalised to [0, 1]; `candidates` must be distinct rows, more than q of them.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        acq = qLogNoisyExpectedImprovement(
            model,
            X_baseline=model.train_inputs[0],
            sampler=SobolQMCNormalSampler(torch.Size([mc_samples]), seed=seed),
            X_pending=torch.as_tensor(pending_x, dtype=torch.double) if len(pending_x) else None,
        )
        choices = torch.as_tensor(candidates, dtype=torch.double)
        chosen, _ = optimize_acqf_discrete(acq, q=q, choices=choices, unique=True)
    position = {row.tobytes(): i for i, row in enumerate(candidates)}
    return np.array([position[row.tobytes()] for row in chosen.numpy()], dtype=np.int64)
