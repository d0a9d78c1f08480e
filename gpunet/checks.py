"""Numbers that make no sense are refused when an app starts, with the key, the value and the
allowed range: one table of (key, rule) per config group, one function per app.

    check_train(cfg)             python -m gpunet.train
    check_search(cfg)            python -m gpunet.search (the sweeper, per point of a grid)
    check_latency(cfg, app)      python -m gpunet.latency.build | stratify | validate

Every problem found is reported at once in one ConfigError (printed as one line by the apps).
Two recipes that run but mislead are warnings, not errors (`recipe_warnings`):
- a run that is all warm-up (recipe.epochs <= recipe.warmup_epochs): its values rank nothing,
  but it is the cheapest smoke test of the whole pipeline (the tests and the GPU check train
  1-2 epochs with the proxy recipe's 1 warm-up epoch);
- a long run at the proxy's raised lr without gradient clipping, which diverged when measured.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gpunet.errors import ConfigError

log = logging.getLogger(__name__)
_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    key: str  # dotted config key; a key the composed config lacks is not checked
    allowed: str  # the allowed range, in words
    ok: Callable[[Any], bool]
    nullable: bool = False  # null is allowed (it means a default)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # YAML reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def integer(low: int, high: int | None = None) -> tuple[str, Callable[[Any], bool]]:
    words = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"
    return words, lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= low
                             and (high is None or v <= high))


def number(low: float, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> tuple[str, Callable[[Any], bool]]:
    if high is None:
        words = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        words = (f"a number between {low:g} and {high:g}"
                 + {(False, False): "", (True, False): f", not {low:g}", (False, True): f", not {high:g}",
                    (True, True): ", both excluded"}[(low_open, high_open)])

    def ok(value: Any) -> bool:
        x = _number(value)
        return (x is not None and math.isfinite(x) and (x > low if low_open else x >= low)
                and (high is None or (x < high if high_open else x <= high)))
    return words, ok


def rule(key: str, spec: tuple[str, Callable[[Any], bool]], nullable: bool = False) -> Rule:
    return Rule(key, spec[0], spec[1], nullable)


FRACTION = number(0, 1)
BELOW_ONE = number(0, 1, high_open=True)

RECIPE = [
    rule("recipe.epochs", integer(1)),
    rule("recipe.batch_size", integer(1)),
    rule("recipe.warmup_epochs", number(0)),
    rule("recipe.lr", number(0, low_open=True)),
    rule("recipe.lr_base_batch", integer(1)),
    rule("recipe.weight_decay", number(0)),
    rule("recipe.smoothing", BELOW_ONE),
    rule("recipe.drop", BELOW_ONE),
    rule("recipe.drop_path", BELOW_ONE),
    rule("recipe.reprob", FRACTION),
    rule("recipe.ema_decay", BELOW_ONE),
    rule("recipe.resolution_scale", number(0, low_open=True)),
    rule("recipe.train_batches_per_epoch", integer(1), nullable=True),
    rule("recipe.clip_grad", number(0, low_open=True), nullable=True),  # null: no clipping
]
DATA = [
    rule("data.num_workers", integer(0)),
    rule("data.num_classes", integer(1), nullable=True),  # imagefolder: null says how many
    rule("data.resolution", integer(1), nullable=True),
    rule("data.val_fraction", number(0, 1, low_open=True, high_open=True)),
    rule("data.train_size", integer(1)),
    rule("data.val_size", integer(1)),
    rule("data.hflip", FRACTION),
]
TRAINING = [
    rule("seed", integer(0)),
    rule("early_stop.grace_epochs", integer(0)),
    rule("early_stop.min_completed", integer(0)),
    *RECIPE, *DATA,
]
SEARCH = [
    rule("search.n_trials", integer(1)),
    rule("search.batch_size", integer(1), nullable=True),
    rule("search.max_failure_rate", FRACTION),
    rule("search.min_trials_before_failure_check", integer(0)),
    rule("search.pool.samples", integer(1)),
    rule("search.pool.seed", integer(0)),
    rule("search.final_check.top", integer(1)),
    rule("search.final_check.rounds", integer(1)),
    rule("search.final_check.widen", integer(1)),
    rule("search.final_check.settle", integer(0)),
    rule("seed", integer(0)),
]
LATENCY = [
    rule("latency.workers", integer(1), nullable=True),  # null: one per GPU
    rule("latency.runs", integer(1)),
    rule("latency.warmup", integer(0)),
    rule("latency.batch_size", integer(1)),
    rule("latency.threads", integer(1)),
    rule("latency.num_classes", integer(1), nullable=True),
]
LATENCY_APPS = {
    "build": [rule("seed", integer(0))],
    "stratify": [rule("stratify.samples", integer(1)), rule("stratify.seed", integer(0))],
    "validate": [rule("validate.networks", integer(5)), rule("validate.rounds", integer(1)),
                 rule("validate.seed", integer(0))],
}
LAUNCHER = [  # hydra.launcher of the search: how many jobs run at once
    rule("n_jobs", ("a non-zero integer (-1: every CPU)",
                    lambda v: isinstance(v, int) and not isinstance(v, bool) and v != 0), nullable=True),
    rule("array_parallelism", integer(1)),
]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def broken(cfg: DictConfig, rules: Iterable[Rule], prefix: str = "") -> list[str]:
    """`key=value (allowed: ...)` for every rule cfg breaks."""
    problems = []
    for r in rules:
        value = _select(cfg, r.key)
        if value is _ABSENT or (value is None and r.nullable) or r.ok(value):
            continue
        allowed = r.allowed + (" or null" if r.nullable else "")
        problems.append(f"{prefix}{r.key}={_show(value)} (allowed: {allowed})")
    return problems


def tier_band(cfg: DictConfig) -> list[str]:
    """target_ms > 0 and 0 <= tolerance_ms < target_ms."""
    target, tolerance = _select(cfg, "tier.target_ms"), _select(cfg, "tier.tolerance_ms")
    if target is _ABSENT:
        return []
    problems = broken(cfg, [rule("tier.target_ms", number(0, low_open=True))])
    t, tol = _number(target), _number(tolerance)
    if tol is None or not math.isfinite(tol) or tol < 0 or (t is not None and t > 0 and tol >= t):
        problems.append(f"tier.tolerance_ms={_show(tolerance)} (allowed: a number >= 0 and "
                        f"< tier.target_ms={_show(target)}: the band is target +- tolerance)")
    return problems


def data_source(cfg: DictConfig) -> list[str]:
    """Settings without which there is nothing to train on."""
    if _select(cfg, "data.name") == "imagefolder" and _select(cfg, "data.root") is None:
        return ["data=imagefolder needs data.root=<folder with train/ and val/ subfolders>"]
    return []


def raise_if(problems: Sequence[str]) -> None:
    if len(problems) == 1:
        raise ConfigError(f"bad setting: {problems[0]}")
    if problems:
        raise ConfigError(f"{len(problems)} bad settings: " + "; ".join(problems))


# Measured with the proxy recipe (experiments/results/proxy_rank_digits*.md): 10 epochs at its lr
# of 0.24 diverged after the warm-up (train loss 2.3 -> 5, top-1 spread over seeds 0.110) unless
# recipe.clip_grad=1.0 (spread 0.007); 3 epochs at 0.24, and 20 at the paper's 0.06
# (table3_cpu_20ep.md), did not diverge unclipped.
DIVERGED_EPOCHS, STABLE_LR = 10, 0.06


def recipe_warnings(cfg: DictConfig) -> list[str]:
    """Recipes that run but whose top-1 misleads: all warm-up (the lr never reaches recipe.lr),
    or a long unclipped run at an lr above the paper's (it diverged when measured)."""
    epochs, warmup, lr = (_number(_select(cfg, f"recipe.{key}")) for key in ("epochs", "warmup_epochs", "lr"))
    warnings = []
    if epochs is not None and warmup is not None and 0 < warmup and epochs <= warmup:
        warnings.append(
            f"recipe.epochs={_show(cfg.recipe.epochs)} <= recipe.warmup_epochs="
            f"{_show(cfg.recipe.warmup_epochs)}: the whole run is warm-up (the lr never reaches "
            "recipe.lr), so its top-1 ranks nothing; fine for a smoke test, otherwise raise "
            "recipe.epochs or lower recipe.warmup_epochs")
    if (epochs is not None and lr is not None and epochs >= DIVERGED_EPOCHS and lr > STABLE_LR
            and _select(cfg, "recipe.clip_grad") is None):
        warnings.append(
            f"recipe.epochs={_show(cfg.recipe.epochs)} at recipe.lr={_show(cfg.recipe.lr)} without "
            f"recipe.clip_grad: runs of {DIVERGED_EPOCHS} epochs at the proxy recipe's lr 0.24 "
            "diverged after the warm-up unless clipped; add recipe.clip_grad=1.0 (or lower "
            f"recipe.lr to {STABLE_LR:g}, the paper's)")
    return warnings


def check_train(cfg: DictConfig) -> None:
    """`python -m gpunet.train`: the recipe, data, seed and early-stopping numbers."""
    raise_if(broken(cfg, TRAINING) + data_source(cfg))
    for warning in recipe_warnings(cfg):
        log.warning(warning)


def _searcher_and_objective(cfg: DictConfig) -> list[str]:
    """The searcher's knobs and a synthetic objective's, checked by building them on a one-row
    pool (their own checks), before any table is built."""
    import numpy as np

    from gpunet.search.searchers import make_searcher
    from gpunet.space import space_from_config

    problems = []
    card = space_from_config(cfg.search_space).cardinalities
    try:
        make_searcher(OmegaConf.to_container(cfg.searcher, resolve=True),
                      np.zeros((1, len(card)), dtype=np.int16), card, int(cfg.seed),
                      budget=int(cfg.search.n_trials))  # n_init: auto scales to it
    except (ValueError, TypeError) as err:
        problems.append(f"searcher={cfg.searcher.get('name')}: {err}")
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    from gpunet.search.objectives import objective_function, trains

    if not trains(objective):
        try:  # a synthetic objective's knobs, or a custom objective's `_target_` import
            objective_function(objective, card)
        except (ValueError, TypeError) as err:
            problems.append(f"objective={objective.get('name')}: {err}")
    return problems


def check_search(cfg: DictConfig) -> None:
    """`python -m gpunet.search`, per search: the search knobs, the tier band, the latency
    settings, the launcher's parallelism, the searcher's and objective's knobs, and for a
    training objective what `check_train` checks."""
    problems = broken(cfg, SEARCH) + tier_band(cfg) + broken(cfg, LATENCY)
    launcher = _select(cfg, "hydra.launcher")
    if isinstance(launcher, DictConfig):
        problems += broken(launcher, LAUNCHER, prefix="hydra.launcher.")
    from gpunet.search.objectives import trains

    training = trains(_select(cfg, "objective") or {})
    if training:
        problems += [p for p in broken(cfg, TRAINING) + data_source(cfg) if p not in problems]
    if not any(p.startswith("seed=") for p in problems):  # the searcher needs a valid seed
        problems += _searcher_and_objective(cfg)
    raise_if(problems)
    for warning in recipe_warnings(cfg) if training else []:
        log.warning(warning)


def check_latency(cfg: DictConfig, app: str) -> None:
    """`python -m gpunet.latency.<app>` (build, stratify, validate)."""
    problems = broken(cfg, LATENCY) + broken(cfg, LATENCY_APPS[app])
    if app == "stratify" and _select(cfg, "stratify.all_tiers") is False:  # else conf/tier/ is used
        problems += tier_band(cfg)
    raise_if(problems)
