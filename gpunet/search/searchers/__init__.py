"""Searchers: ask/tell optimisers over a pool of encodings, built by name or from a Hydra config.

A config is a mapping with `name` (one of `SEARCHERS`) plus that searcher's knobs, as in
conf/searcher/<name>.yaml; e.g. `make_searcher(cfg.searcher, pool, cardinalities, seed=cfg.seed,
budget=cfg.search.n_trials)`. The budget resolves `n_init: auto` (`auto_n_init`).
A searcher is a `Searcher` subclass with a `name` in a module of this package: importing the
package imports every module, and the subclass registers itself.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.search.searchers.base import (
    PROPOSERS,
    SEARCHERS,
    Searcher,
    auto_n_init,
    resolve_n_init,
)

for _module in pkgutil.iter_modules(__path__):  # each module's searchers register themselves
    importlib.import_module(f"{__name__}.{_module.name}")


def make_searcher(
    name_or_cfg: str | Mapping[str, Any],
    pool: np.ndarray,
    cardinalities: np.ndarray,
    seed: int = 0,
    budget: int | None = None,
) -> Searcher:
    """Build a searcher from its name (default knobs) or a config mapping (name + knobs);
    `budget` (the evaluations the search will spend) resolves `n_init: auto`."""
    if isinstance(name_or_cfg, str):
        name, knobs = name_or_cfg, {}
    else:
        knobs = {str(k): v for k, v in name_or_cfg.items()}
        name = knobs.pop("name", None)
    if name not in SEARCHERS:
        raise ValueError(f"unknown searcher {name!r}; choose one of {sorted(SEARCHERS)}")
    return SEARCHERS[name](pool, cardinalities, seed, budget, **knobs)


def code_digest() -> str:
    """A hash of the searchers' source: experiments key their cached runs with it, so a table
    never mixes results of two versions of the code."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


__all__ = ["PROPOSERS", "SEARCHERS", "Searcher", "auto_n_init", "code_digest", "make_searcher",
           "resolve_n_init"]
