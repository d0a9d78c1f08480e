"""What a search maximises: training (conf/objective/train.yaml, `trains: true`), or a value
computed from the encoding, which `objective_function` resolves (a custom `_target_` callable, or
one of the synthetic objectives below, for validating searchers and fast end-to-end runs).

Each digit d of an encoding is mapped linearly from [0, cardinalities[d] - 1] onto one common box
[lower, upper] (the same box for every digit, whatever its cardinality), and a BoTorch synthetic
test function is evaluated there. Values are negated so that, like validation accuracy, larger is
better: searchers maximise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from botorch.test_functions.synthetic import (
    Ackley,
    Levy,
    Rastrigin,
    StyblinskiTang,
    SyntheticTestFunction,
)
from hydra.utils import get_method

from gpunet.errors import ConfigError
from gpunet.space.encoding import check_encodings

FUNCTIONS: dict[str, type[SyntheticTestFunction]] = {
    "ackley": Ackley,
    "levy": Levy,
    "rastrigin": Rastrigin,
    "styblinski_tang": StyblinskiTang,
}


def _rows(encodings: np.ndarray, cardinalities: np.ndarray) -> np.ndarray:
    """An (n, D) array or one row of encodings, checked, as int64 (n is small here)."""
    return check_encodings(np.atleast_2d(encodings), cardinalities).astype(np.int64, copy=False)


class SyntheticObjective:
    """A negated BoTorch test function over encodings scaled to a common box.

    Observation noise is frozen per (seed, encoding) — like a training run with a fixed seed,
    evaluating the same network twice gives the same value — so runs are reproducible and
    resumable; change `seed` to redraw it.
    """

    def __init__(
        self,
        name: str,
        cardinalities: np.ndarray,
        bounds: tuple[float, float] = (-5.0, 5.0),
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        if name not in FUNCTIONS:
            raise ValueError(f"unknown objective {name!r}; choose one of {sorted(FUNCTIONS)}")
        card = np.asarray(cardinalities, dtype=np.int64)
        if card.ndim != 1 or card.size == 0 or (card < 1).any():
            raise ValueError(f"cardinalities {card.tolist()} must be a non-empty 1-D list of integers >= 1")
        lower, upper = (float(b) for b in bounds)
        if not lower < upper:
            raise ValueError(f"bounds {list(bounds)} must be [lower, upper] with lower < upper")
        if noise_std < 0:
            raise ValueError(f"noise_std is {noise_std}; it must be >= 0")
        self.name = name
        self.cardinalities = card
        self.lower, self.upper = lower, upper
        self.noise_std = float(noise_std)
        self.seed = int(seed)
        self._function = FUNCTIONS[name](dim=card.size)

    def to_box(self, encodings: np.ndarray) -> torch.Tensor:
        """Map digits onto the common box; a digit with a single choice sits at the centre."""
        enc = _rows(encodings, self.cardinalities)
        span = np.maximum(self.cardinalities - 1, 1)
        unit = np.where(self.cardinalities > 1, enc / span, 0.5)
        return torch.as_tensor(self.lower + (self.upper - self.lower) * unit, dtype=torch.double)

    def __call__(self, encodings: np.ndarray) -> np.ndarray:
        """Values to maximise for an (n, D) array (or one row) of encodings; shape (n,)."""
        enc = _rows(encodings, self.cardinalities)
        values = -self._function.evaluate_true(self.to_box(enc)).numpy()
        if self.noise_std > 0:
            noise = [np.random.default_rng([self.seed, *row]).normal() for row in enc]
            values = values + self.noise_std * np.asarray(noise)
        return values


def make_objective(name_or_cfg: str | Mapping[str, Any], cardinalities: np.ndarray) -> SyntheticObjective:
    """Build an objective from a name or a config mapping (`name` plus keyword knobs)."""
    if isinstance(name_or_cfg, str):
        return SyntheticObjective(name_or_cfg, cardinalities)
    cfg = dict(name_or_cfg)
    if "name" not in cfg:
        raise ValueError(f"objective config {cfg} has no 'name'; choose one of {sorted(FUNCTIONS)}")
    name = cfg.pop("name")
    allowed = {"bounds", "noise_std", "seed"}
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f"unknown objective knob(s) {sorted(unknown)}; allowed are {sorted(allowed)}")
    if "bounds" in cfg:
        cfg["bounds"] = tuple(cfg["bounds"])
    return SyntheticObjective(name, cardinalities, **cfg)


def trains(objective: Mapping[str, Any]) -> bool:
    """Whether the objective trains each candidate (conf/objective/train.yaml says `trains:
    true`) instead of computing a value from its encoding: what decides early stopping, the
    data and recipe in the search's definition, and adding the best network to the hub."""
    return bool(objective.get("trains", False))


def objective_metric(objective: Mapping[str, Any]) -> str:
    """The name of a trial's value in best.yaml and the summary."""
    return "val_top1" if trains(objective) else f"{objective['name']}_value"


def objective_function(objective: str | Mapping[str, Any], cardinalities: np.ndarray
                       ) -> Callable[[Sequence[int]], float]:
    """The value (to maximise) of one encoding under a non-training objective, resolved once:
    a custom objective's `_target_` callable `(encoding, cardinalities) -> value` (a surrogate,
    a predictor, a test double), else the synthetic objective its name picks. Raises a
    ConfigError naming the value when neither resolves."""
    target = objective.get("_target_") if isinstance(objective, Mapping) else None
    if target:
        try:
            function = get_method(str(target))
        except Exception as err:  # noqa: BLE001 - Hydra wraps every import failure differently
            raise ConfigError(f"objective._target_={target!r} cannot be loaded ({err}); name a "
                              "callable (encoding, cardinalities) -> value importable here") from err
        return lambda encoding: float(function(encoding, cardinalities))
    synthetic = make_objective(objective, cardinalities)
    return lambda encoding: float(synthetic(np.asarray(encoding)[None, :])[0])


def evaluate_objective(objective: str | Mapping[str, Any], encoding: Sequence[int],
                       cardinalities: np.ndarray) -> float:
    """One call for the search's job: the value (to maximise) of a single encoding."""
    return objective_function(objective, cardinalities)(encoding)
