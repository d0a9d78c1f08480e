"""`bo`: Bayesian optimisation over a pool — a GP screens a random subset of it by analytic
log-EI, and joint qLogNEI picks the batch among the best of those."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from gpunet.search.searchers.base import (
    FALLBACK,
    MODEL,
    RANDOM_START,
    Searcher,
    Selection,
    resolve_n_init,
    settings_from_knobs,
)
from gpunet.search.searchers.beyond_pool import N_PARENTS, children
from gpunet.search.searchers.gp import (
    GPSettings,
    Hyperparameters,
    build_gp,
    cap_training_set,
    fit_hyperparameters,
    normalise,
    screen,
    select_batch,
)


class BOSearcher(Searcher):
    """Random pool members until `n_init` values are known, then GP-qLogNEI batches.

    Knobs are the fields of `GPSettings`; `n_init: auto` is resolved here from the budget
    (`resolve_n_init`), so `self.gp.n_init` is the integer in use. GP hyper-parameters are
    fitted on the history as it stood at the last multiple of `refit_every` observations (a
    function of the history, so a replayed searcher refits identically) and reused, with all
    current data, until the next.
    Falls back to uniform choice among the candidates when the values carry no information
    (all equal) or the GP cannot be fitted; `diagnostics["mode"]` says which happened.
    When the search lets it leave the pool (`allow_beyond_pool`: a latency tier), the GP also
    scores new encodings bred from the best observations (beyond_pool.py): of `n_generated`
    children, those that are new and admitted, at most half of the candidates seen (the pool
    members fill the rest).
    A GP step for q rows sees `screened_per_row` x q candidates (random remaining pool members
    plus the bred ones), so a search looks at as many candidates per evaluation whatever its
    batch size: the analytic log-EI of the GP keeps the best `n_candidates` of them, and joint
    qLogNEI (with the pending rows) picks the batch among those. The cost per batch is bounded
    by those cheap posteriors and `n_candidates` joint ones. `screened_per_row: 0` skips the
    screen: `n_candidates` random candidates go straight to qLogNEI (searches before it).
    """

    name = "bo"
    extra_settings: ClassVar[tuple[type, ...]] = ()  # subclasses' knob groups beyond the GP's

    def __init__(self, pool: np.ndarray, cardinalities: np.ndarray, seed: int = 0,
                 budget: int | None = None, **knobs: Any) -> None:
        super().__init__(pool, cardinalities, seed, budget)
        gp, *self.extra = settings_from_knobs(knobs, GPSettings, *self.extra_settings)
        self.gp = dataclasses.replace(gp, n_init=resolve_n_init(gp.n_init, self.budget))
        self._fitted: tuple[int, Hyperparameters | None] | None = None  # (history length, fit)

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        return self._choose_by_gp(q, available, rng)

    def _training_set(self, upto: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Normalised inputs and values the GP learns from (after `upto` observations), or
        None when they cannot inform a model: fewer than n_init values, or all equal."""
        idx, values = self.observed(upto)
        if idx.size < self.gp.n_init or np.ptp(values) == 0:
            return None
        n = self.n_observed if upto is None else upto
        train = cap_training_set(values, self.gp.max_train, np.random.default_rng([self.seed, n]))
        return normalise(self.pool[idx[train]], self.cardinalities), values[train]

    def _hyperparameters(self) -> Hyperparameters | None:
        """Hyper-parameters fitted at the last refit point whose history informs a model."""
        anchor = self.n_observed // self.gp.refit_every * self.gp.refit_every
        data = self._training_set(anchor)
        if data is None:
            anchor, data = self.n_observed, self._training_set()
        if self._fitted is None or self._fitted[0] != anchor:
            fit = fit_hyperparameters(*data, self.gp.fit_maxiter, seed=self.seed + anchor,
                                      kernel=self.gp.kernel)
            self._fitted = (anchor, fit)
        return self._fitted[1]

    def _choose_by_gp(
        self, q: int, candidates: np.ndarray, rng: np.random.Generator, by: str = MODEL,
        region: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Selection:
        """q of `candidates` (at least q proposable pool indices) chosen by the GP step; `by`
        names who chose the candidates (the model, or a fallback region) when the GP decides.
        `region` (encodings -> mask) confines the encodings bred beyond the pool, if any."""
        if candidates.size == q:
            self.diagnostics["mode"] = "whole-region"
            return candidates, by
        data = self._training_set()
        if data is None:
            few = len(self.observed()[0]) < self.gp.n_init
            self.diagnostics["mode"] = "random-init" if few else "random-flat"
            return rng.choice(candidates, size=q, replace=False), RANDOM_START if few else FALLBACK
        n_scored = max(self.gp.n_candidates, q)
        n_seen = max(self.gp.screened_per_row * q, n_scored)  # n_scored: no screen
        bred = self._beyond_pool(rng, region)
        if len(bred) > n_seen // 2:  # the pool keeps at least half of the seen candidates
            bred = bred[np.sort(rng.choice(len(bred), size=n_seen // 2, replace=False))]
        n_pool = n_seen - len(bred)
        if candidates.size > n_pool:
            candidates = np.sort(rng.choice(candidates, size=n_pool, replace=False))
        _, first = np.unique(self.pool[candidates], axis=0, return_index=True)
        distinct = candidates[np.sort(first)]
        if distinct.size <= q:  # identical encodings: the GP cannot tell them apart
            self.diagnostics["mode"] = "random-duplicates"
            return rng.choice(candidates, size=q, replace=False), FALLBACK
        hyperparameters = self._hyperparameters()
        if hyperparameters is None:
            self.diagnostics["mode"] = "random-fit-failed"
            return rng.choice(distinct, size=q, replace=False), FALLBACK
        model = build_gp(*data, hyperparameters, kernel=self.gp.kernel)
        seen = normalise(np.concatenate([self.pool[distinct], bred]), self.cardinalities)
        kept = screen(model, seen, n_scored)
        positions = kept  # q >= n_candidates: the screen's best q are the batch
        if kept.size > q:
            positions = kept[select_batch(
                model,
                seen[kept],
                normalise(self.pool[self._pending], self.cardinalities),
                q,
                self.gp.mc_samples,
                seed=int(rng.integers(2**31)),
            )]
        beyond = positions >= distinct.size
        chosen = distinct[np.minimum(positions, distinct.size - 1)]
        chosen[beyond] = self.add_rows(bred[positions[beyond] - distinct.size])
        self.diagnostics.update(mode="gp", n_train=len(data[1]), n_screened=len(seen),
                                n_candidates=len(kept), n_bred=len(bred),
                                n_beyond_pool=int(beyond.sum()))
        return chosen, by

    def _beyond_pool(self, rng: np.random.Generator,
                     region: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
        """New encodings for this GP step: children of the best N_PARENTS observations (those in
        `region`, if any are) that are not pool rows, lie in `region` and pass `admissible`;
        none unless the search allows leaving the pool."""
        width = self.cardinalities.size
        if self.admissible is None or not self.gp.n_generated:
            return np.empty((0, width), dtype=np.int64)
        idx, values = self.observed()
        inside = region(self.pool[idx]) if region is not None else None
        if inside is not None and inside.any():
            idx, values = idx[inside], values[inside]
        parents = self.pool[idx[np.argsort(-values, kind="stable")[:N_PARENTS]]]
        bred = np.unique(self.canonical_form(children(parents, self.cardinalities, self.gp.n_generated,
                                                      rng)), axis=0)
        bred = bred[self.find_rows(bred) < 0]
        if region is not None and len(bred):
            bred = bred[region(bred)]
        return bred[np.asarray(self.admissible(bred), dtype=bool)] if len(bred) else bred
