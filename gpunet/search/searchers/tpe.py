"""`tpe`: Optuna's TPE sampler with its defaults, one categorical parameter per digit, over a pool.

What a user would pick instead of LA-MCTS: `optuna.samplers.TPESampler()` untouched (10 random
start-up trials, independent sampling, no constant liar) on a space of one
`CategoricalDistribution(range(cardinality))` per digit, driven by ask/tell.

The pool rule: TPE samples from the whole product space, but a pool search may only evaluate
proposable pool rows. Each asked trial's encoding is mapped to the proposable pool row nearest
to it by Hamming distance (ties broken at random): the encoding itself when it is a proposable
pool row, otherwise (outside the pool, already observed or pending, or taken by an earlier trial
of the same batch) its closest stand-in. Optuna is then told the row actually evaluated: at
every propose the study is rebuilt from the searcher's history (one completed trial per observed
row, with that row's digits as the params and its mean value), so the model only ever sees
evaluated encodings, and a searcher rebuilt from a journal proposes exactly as the original (the
sampler's seed is drawn from the call's generator). Failed rows are left out (TPE ignores failed
trials); pending rows too (with `constant_liar=False`, TPE ignores running trials). A batch
(q > 1) is q asks from the same study, as Optuna's default behaves with parallel workers.
`diagnostics["mean_distance"]` is the mean Hamming distance from TPE's samples to the rows used.
When the search lets the searcher leave the pool (`allow_beyond_pool`: a latency tier), a sample
that is no pool row but that the tier admits is itself proposed (added as a row): TPE over the
whole tier, as a user would run it.
Proposers: `random_start` while the study has fewer completed trials than the sampler's
`n_startup_trials` (TPE samples at random then), else `model` for a sample that is itself a
proposable pool row and `fallback` for its nearest stand-in.

Needs the optional dependency `optuna` (`pip install gpunet[bench]`).
"""

from __future__ import annotations

import inspect
import logging

import numpy as np

from gpunet.search.searchers.base import FALLBACK, MODEL, RANDOM_START, Searcher, Selection


class TPESearcher(Searcher):
    """Optuna's default TPE, its samples mapped to the nearest proposable pool rows."""

    name = "tpe"

    def _select(self, q: int, available: np.ndarray, rng: np.random.Generator) -> Selection:
        try:
            import optuna
        except ImportError as err:
            raise ImportError("searcher 'tpe' needs optuna: pip install 'gpunet[bench]'") from err
        names = [f"d{d}" for d in range(self.cardinalities.size)]
        space = {
            n: optuna.distributions.CategoricalDistribution(list(range(c)))
            for n, c in zip(names, self.cardinalities.tolist(), strict=True)
        }
        idx, values = self.observed()
        previous = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(logging.WARNING)  # a study per propose: no "study created" lines
        try:
            study = optuna.create_study(
                direction="maximize", sampler=optuna.samplers.TPESampler(seed=int(rng.integers(2**31)))
            )
            study.add_trials(
                [
                    optuna.trial.create_trial(
                        params=dict(zip(names, self.pool[i].tolist(), strict=True)),
                        distributions=space,
                        value=float(v),
                    )
                    for i, v in zip(idx.tolist(), values.tolist(), strict=True)
                ]
            )
            free = ~self._blocked
            chosen, distances = [], []
            for _ in range(q):
                trial = study.ask(space)
                sample = self.canonical_form(np.array([[trial.params[n] for n in names]]))[0]
                if self._admits_new(sample):
                    chosen.append(int(self.add_rows(sample[None])[0]))
                    free = np.append(free, False)
                    distances.append(0)
                    continue
                distance = np.where(free, (self.pool != sample).sum(axis=1), sample.size + 1)
                pick = int(rng.choice(np.flatnonzero(distance == distance.min())))
                free[pick] = False
                chosen.append(pick)
                distances.append(int(distance[pick]))
        finally:
            optuna.logging.set_verbosity(previous)
        self.diagnostics.update(mode="tpe", mean_distance=float(np.mean(distances)))
        startup = inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default
        if idx.size < startup:
            return np.array(chosen, dtype=np.int64), RANDOM_START
        return np.array(chosen, dtype=np.int64), [MODEL if d == 0 else FALLBACK for d in distances]

    def _admits_new(self, sample: np.ndarray) -> bool:
        """Whether `sample` may be proposed as a new row: leaving the pool is allowed, the
        sample is no row yet and the tier admits it."""
        return (self.admissible is not None and self.find_rows(sample)[0] < 0
                and bool(self.admissible(sample[None])[0]))
