"""One search (paper §3, Fig. 2): a tier's pool, a searcher, and batches of jobs on a launcher.

The server side of the paper's client/server design: propose a batch, hand it to the Hydra
launcher (local processes, SLURM, Ray), record every result in the journal, repeat. The journal
is the state, so a re-run with the same directory resumes: finished trials are replayed into a
fresh searcher (same seed -> same next proposals), interrupted ones run again in their own
directories (so training resumes from their checkpoints), and the budget counts every trial.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig
from tqdm import tqdm

from gpunet.search.identity import check_same_search, search_definition
from gpunet.search.journal import Journal, Trial
from gpunet.search.searchers import make_searcher
from gpunet.space import space_from_config

log = logging.getLogger(__name__)


class TooManyFailures(RuntimeError):
    """The share of failed trials went over `search.max_failure_rate`."""

    def __init__(self, message: str, trials: list[Trial]) -> None:
        super().__init__(message)
        self.trials = trials


@dataclass
class TierPool:
    encodings: np.ndarray  # (M, D) int16
    latencies_ms: np.ndarray  # (M,)

    def row_of(self, trial: Trial) -> int:
        """The pool row a journaled trial was proposed from, checked against its encoding."""
        row = trial.pool_index
        if row is None or not 0 <= row < len(self.encodings) or \
                self.encodings[row].tolist() != [int(x) for x in trial.encoding]:
            raise ValueError(f"trial {trial.number} of the journal is not row {row} of this "
                             "tier's pool: the pool changed since the search started (another "
                             "latency table or pool cache); run the search in a new directory")
        return int(row)


def load_tier_pool(cfg: DictConfig) -> TierPool:
    """Make sure the latency table exists (build what is missing), then take the tier's pool."""
    from gpunet.latency.build import ensure_table
    from gpunet.latency.stratify import tier_pool

    space = space_from_config(cfg.search_space)
    table = ensure_table(cfg)
    pool = cfg.search.pool
    encodings, latencies = tier_pool(space, table, cfg.tier, n=int(pool.samples),
                                     seed=int(pool.seed), cache_dir=Path(pool.cache_dir),
                                     num_classes=int(cfg.latency.num_classes),
                                     calibrated=bool(cfg.latency.calibrated))
    return TierPool(encodings, latencies)


def open_journal(cfg: DictConfig, search_dir: Path) -> Journal:
    """The search's journal: started with cfg's definition, or checked against it on resume."""
    journal = Journal(search_dir / "journal.jsonl")
    definition = search_definition(cfg)
    stored = journal.definition()
    if stored is None:
        journal.start(definition)
    else:
        check_same_search(stored, definition, str(search_dir))
    return journal


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_overrides(base: Sequence[str], trial: Trial, search_dir: Path,
                  early_stopping: bool, wandb_group: bool) -> list[str]:
    """The overrides of one trial's job: the search's own, the candidate, and its directory
    (fixed per trial number, so a trial that runs again resumes from its checkpoint)."""
    overrides = [*base,
                 f"trial.number={trial.number}",
                 f"trial.encoding=[{','.join(str(int(x)) for x in trial.encoding)}]",
                 f"search.dir={_quote(str(search_dir))}",
                 f"hydra.sweep.dir={_quote(str(search_dir / 'trials'))}",
                 f"hydra.sweep.subdir={trial.number:04d}"]
    if early_stopping:
        overrides.append(f"early_stop.journal={_quote(str(search_dir / 'journal.jsonl'))}")
    if wandb_group:  # the trials' W&B runs share the search's group
        overrides.append(f"logger.group={_quote(search_dir.name)}")
    return overrides


def _record(trial: Trial, ret: JobReturn) -> Trial:
    if ret.status == JobStatus.COMPLETED and isinstance(ret.return_value, dict):
        result = dict(ret.return_value)
        trial.status = result.pop("status", "completed")
        trial.value = result.pop("value", None)
        trial.curve = list(result.pop("curve", []) or [])
        trial.error = result.pop("error", None)
        trial.duration_s = result.pop("duration_s", None)
        trial.extra = result
        if trial.status != "failed" and (trial.value is None or not math.isfinite(trial.value)):
            trial.status, trial.error = "failed", trial.error or f"non-finite value {trial.value}"
    else:
        trial.status = "failed"
        try:  # a failed job's return_value re-raises the job's exception
            error = ret.return_value
        except Exception as raised:  # noqa: BLE001 - any job error is the trial's error
            error = raised
        trial.error = f"{type(error).__name__}: {error}"
    return trial


def run_search(cfg: DictConfig, overrides: Sequence[str], search_dir: Path, launcher: Launcher,
               batch_size: int, pool: TierPool | None = None, journal: Journal | None = None
               ) -> list[Trial]:
    """Run (or resume) one search in `search_dir`; returns every trial, finished or not."""
    settings = cfg.search
    journal = journal or open_journal(cfg, search_dir)  # before the pool: refused at once
    pool = pool or load_tier_pool(cfg)
    space = space_from_config(cfg.search_space)
    searcher = make_searcher(cfg.searcher, pool.encodings, space.cardinalities, int(cfg.seed))
    for trial in journal.finished_in_order():
        searcher.observe([pool.row_of(trial)], [trial.observed_value])
    trials = journal.load()
    n_trials = int(settings.n_trials)
    finished = sum(t.finished for t in trials.values())
    if trials:
        log.info("resuming %s: %d trials finished, %d interrupted", search_dir, finished,
                 sum(not t.finished for t in trials.values()))
    progress = tqdm(total=n_trials, initial=min(finished, n_trials), desc=search_dir.name,
                    unit="trial", dynamic_ncols=True)
    try:
        while finished < n_trials:
            batch = [t for t in trials.values() if not t.finished][:batch_size]
            if not batch:
                chosen = searcher.propose(min(batch_size, n_trials - finished))
                if chosen.size == 0:
                    log.warning("the tier's pool is exhausted after %d trials", finished)
                    break
                first = max(trials, default=-1) + 1
                batch = [Trial(first + i, -1, pool.encodings[idx].tolist(),
                               float(pool.latencies_ms[idx]), pool_index=int(idx))
                         for i, idx in enumerate(chosen)]
            next_job = max((t.job for t in trials.values()), default=-1) + 1
            for offset, trial in enumerate(batch):
                trial.job, trial.status = next_job + offset, "running"
                journal.append(trial)
                trials[trial.number] = trial
            early = bool(settings.early_stopping) and cfg.objective.name == "train"
            grouped = cfg.logger.name == "wandb"
            returns = launcher.launch([job_overrides(overrides, t, search_dir.resolve(), early,
                                                     grouped) for t in batch],
                                      initial_job_idx=next_job)
            for trial, ret in zip(batch, returns, strict=True):
                journal.append(_record(trial, ret))
                searcher.observe([pool.row_of(trial)], [trial.observed_value])
                if trial.status == "failed":
                    log.warning("trial %d failed: %s", trial.number, trial.error)
            finished = sum(t.finished for t in trials.values())
            progress.update(min(finished, n_trials) - progress.n)
            progress.set_postfix(best=f"{searcher.best_value:.4g}",
                                 failed=sum(t.status == "failed" for t in trials.values()))
            _check_failures(list(trials.values()), settings)
    finally:
        progress.close()
    return list(trials.values())


def _check_failures(trials: list[Trial], settings: DictConfig) -> None:
    done = [t for t in trials if t.finished]
    failed = [t for t in done if t.status == "failed"]
    if len(done) < int(settings.min_trials_before_failure_check) or not failed:
        return
    rate = len(failed) / len(done)
    if rate > float(settings.max_failure_rate):
        raise TooManyFailures(
            f"stopping the search: {len(failed)} of {len(done)} trials failed ({rate:.0%} > "
            f"search.max_failure_rate={settings.max_failure_rate}); last error: {failed[-1].error}",
            trials)
