"""One search (paper §3, Fig. 2): a tier's pool, a searcher, and batches of jobs on a launcher.

The pool (a Sobol sample of the tier) is the searcher's random start and the key trials replay
by; a model-guided searcher may also propose new encodings whose estimate lies in the tier,
journaled with `pool_index` null and re-added, in trial order, when the search resumes.

The server side of the paper's client/server design: propose a batch, hand it to the Hydra
launcher (local processes, SLURM, Ray), record every result in the journal, repeat. The journal
is the state, so a re-run with the same directory resumes: finished trials are replayed into a
fresh searcher (same seed -> same next proposals), interrupted ones run again in their own
directories (so training resumes from their checkpoints), and the budget counts every trial.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig

from gpunet import console
from gpunet.errors import GpunetError
from gpunet.search.identity import SearchMismatch, check_same_search, search_definition
from gpunet.search.interrupt import raise_if_interrupted
from gpunet.search.journal import Journal, Trial
from gpunet.search.objectives import trains
from gpunet.search.searchers import make_searcher
from gpunet.space import canonical_encodings, space_from_config
from gpunet.train.loggers import uses_wandb

if TYPE_CHECKING:  # the latency stack is imported where the pool is built, not with the sweeper
    from gpunet.latency.stratify import Tier

log = logging.getLogger(__name__)
MEDIAN_STOP_FILE = "median_stop.json"  # the thresholds of median stopping, for the trials' jobs


class TooManyFailures(GpunetError, RuntimeError):
    """The share of failed trials went over `search.max_failure_rate`."""

    def __init__(self, message: str, trials: list[Trial]) -> None:
        super().__init__(message)
        self.trials = trials


@dataclass
class TierPool:
    """The tier's Sobol pool (the random start and the replay key) and, where the latency table
    is at hand, the tier's test for any encoding, so the searcher may go beyond the pool."""

    encodings: np.ndarray  # (M, D) int16
    latencies_ms: np.ndarray  # (M,)
    estimate_ms: Callable[[np.ndarray], np.ndarray] | None = None  # (N, D) -> (N,) estimates
    tier: Tier | None = None  # the latency band the estimates must lie in
    # the pool's encodings are canonical (one per network: a search that trains networks) and
    # this puts new ones in that form; None: every encoding is a candidate of its own
    canonical: Callable[[np.ndarray], np.ndarray] | None = None

    def in_tier(self, encodings: np.ndarray) -> np.ndarray:
        """Which encodings the tier admits: their estimate lies in its band."""
        return self.tier.holds(self.estimate_ms(encodings))

    def row_of(self, trial: Trial) -> int:
        """The pool row a journaled trial was proposed from, checked against its encoding."""
        row = trial.pool_index
        if row is None or not 0 <= row < len(self.encodings) or \
                self.encodings[row].tolist() != [int(x) for x in trial.encoding]:
            raise SearchMismatch(f"trial {trial.number} of the journal is not row {row} of this "
                                 "tier's pool: the pool changed since the search started (another "
                                 "latency table or pool cache); run the search in a new directory")
        return int(row)


def load_tier_pool(cfg: DictConfig) -> TierPool:
    """Make sure the latency table exists (build what is missing), then take the tier's pool:
    one encoding per network when the objective trains networks."""
    from gpunet.latency.build import LatencySetup, ensure_table
    from gpunet.latency.estimate import EncodingEstimator
    from gpunet.latency.stratify import Tier, tier_pool

    space = space_from_config(cfg.search_space)
    table = ensure_table(LatencySetup.from_config(cfg), space)
    pool, tier = cfg.search.pool, Tier.from_config(cfg.tier)
    num_classes, calibrated = int(cfg.latency.num_classes), bool(cfg.latency.calibrated)
    canonical = trains(cfg.objective)  # a trained network's value is the network's
    encodings, latencies = tier_pool(space, table, tier, n=int(pool.samples), seed=int(pool.seed),
                                     cache_dir=Path(pool.cache_dir), num_classes=num_classes,
                                     calibrated=calibrated, canonical=canonical)
    return TierPool(encodings, latencies, EncodingEstimator(space, table, num_classes, calibrated),
                    tier, partial(canonical_encodings, space) if canonical else None)


def check_journal(cfg: DictConfig, search_dir: Path) -> Journal:
    """The search's journal, checked against cfg's definition if it exists; reads only (creates
    nothing), so a search can be refused before anything is built or written."""
    journal = Journal(search_dir / "journal.jsonl")
    stored = journal.definition()
    if stored is not None:
        check_same_search(stored, search_definition(cfg), str(search_dir))
    return journal


def open_journal(cfg: DictConfig, search_dir: Path) -> Journal:
    """The search's journal: started with cfg's definition, or checked against it on resume."""
    journal = check_journal(cfg, search_dir)
    if journal.definition() is None:
        journal.start(search_definition(cfg))
    return journal


def quote_value(value: str) -> str:
    """A string as a quoted Hydra override value (paths may hold characters the grammar reserves)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_median_thresholds(search_dir: Path, journal: Journal) -> None:
    """What median stopping needs from the search (the trials' jobs read this, not the journal):
    per-epoch thresholds of the completed trials, rewritten as trials finish."""
    from gpunet.train.callbacks import MedianThresholds  # Lightning: only where training runs

    MedianThresholds.from_curves(journal.completed_curves()).write(search_dir / MEDIAN_STOP_FILE)


def trial_dir(search_dir: Path, trial: Trial) -> Path:
    """Where a trial's job runs (fixed per trial number)."""
    return search_dir / "trials" / f"{trial.number:04d}"


def job_overrides(base: Sequence[str], trial: Trial, search_dir: Path,
                  early_stopping: bool, wandb_group: bool) -> list[str]:
    """The overrides of one trial's job: the search's own, the candidate, and its directory
    (fixed per trial number, so a trial that runs again resumes from its checkpoint)."""
    overrides = [*base,
                 f"trial.number={trial.number}",
                 f"trial.encoding=[{','.join(str(int(x)) for x in trial.encoding)}]",
                 f"hydra.sweep.dir={quote_value(str(trial_dir(search_dir, trial).parent))}",
                 f"hydra.sweep.subdir={trial_dir(search_dir, trial).name}"]
    if early_stopping:
        overrides.append(f"early_stop.thresholds={quote_value(str(search_dir / MEDIAN_STOP_FILE))}")
    if wandb_group:  # the trials' W&B runs share the search's group
        overrides.append(f"logger.group={quote_value(search_dir.name)}")
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


class _SearchRun:
    """The bookkeeping both schedules share: the trials, the searcher, the journal, the progress."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], search_dir: Path,
                 pool: TierPool, journal: Journal) -> None:
        self.cfg, self.overrides, self.search_dir = cfg, list(overrides), search_dir
        self.pool, self.journal = pool, journal
        space = space_from_config(cfg.search_space)
        self.searcher = make_searcher(cfg.searcher, pool.encodings, space.cardinalities, int(cfg.seed),
                                      budget=int(cfg.search.n_trials))  # resolves n_init: auto
        if pool.estimate_ms is not None:
            self.searcher.allow_beyond_pool(pool.in_tier, pool.canonical)
        self.trials = journal.load()
        for trial in self.trials.values():  # rows beyond the pool, in the order they were added
            self.row_of(trial)
        for trial in journal.finished_in_order():
            self.searcher.observe([self.row_of(trial)], [trial.observed_value])
        self.n_trials = int(cfg.search.n_trials)
        self.early = bool(cfg.search.early_stopping) and trains(cfg.objective)
        self.grouped = uses_wandb(cfg.logger)
        if self.early:  # a resumed search's trials compare against what already completed
            write_median_thresholds(search_dir, journal)
        if self.trials:
            log.info("resuming %s: %d trials finished, %d interrupted", search_dir, self.finished,
                     len(self.interrupted()))
        # a bar on a terminal, else a plain line per 10% of the trials (or 30 s) with rate and ETA
        self.progress = console.progress(self.n_trials, search_dir.name, unit="trial",
                                         initial=min(self.finished, self.n_trials))

    @property
    def finished(self) -> int:
        return sum(t.finished for t in self.trials.values())

    def row_of(self, trial: Trial) -> int:
        """The searcher's row of a trial: its pool row, or (a candidate from beyond the pool,
        journaled with pool_index null) the row its encoding was added as."""
        if trial.pool_index is not None:
            return self.pool.row_of(trial)
        return int(self.searcher.add_rows(np.asarray([trial.encoding]))[0])

    def interrupted(self) -> list[Trial]:
        """Trials handed to a launcher by an earlier run that never came back: they run again."""
        return [t for t in self.trials.values() if not t.finished and t.status == "running"]

    def propose(self, q: int) -> list[Trial]:
        """Up to q new trials chosen by the searcher (none when the pool is exhausted), each with
        who proposed it; they get their numbers when they start, so trials proposed ahead never
        share one."""
        if q <= 0:
            return []
        chosen = self.searcher.propose(q)
        encodings = self.searcher.pool[chosen]
        in_pool = chosen < self.searcher.n_base
        latencies = np.empty(chosen.size)
        latencies[in_pool] = self.pool.latencies_ms[chosen[in_pool]]
        if not in_pool.all():  # new encodings from beyond the pool: their estimate
            latencies[~in_pool] = self.pool.estimate_ms(encodings[~in_pool])
        return [Trial(-1, -1, encoding.tolist(), float(latency),
                      pool_index=int(idx) if inside else None, proposer=by)
                for idx, encoding, latency, inside, by in zip(
                    chosen, encodings, latencies, in_pool, self.searcher.proposers, strict=True)]

    def start(self, batch: list[Trial]) -> list[list[str]]:
        """Number the new trials, give every trial a job number, journal them as running; returns
        their jobs' overrides. (Interrupted trials keep their numbers and run as new jobs.)"""
        next_number = max(self.trials, default=-1) + 1
        next_job = max((t.job for t in self.trials.values()), default=-1) + 1
        for offset, trial in enumerate(batch):
            if trial.number < 0:
                trial.number, next_number = next_number, next_number + 1
            trial.job, trial.status = next_job + offset, "running"
            self.journal.append(trial)
            self.trials[trial.number] = trial
        return [job_overrides(self.overrides, t, self.search_dir.resolve(), self.early, self.grouped)
                for t in batch]

    def finish(self, trial: Trial, ret: JobReturn) -> None:
        """Record a job's result everywhere; raises TooManyFailures when the rate is exceeded."""
        self.journal.append(_record(trial, ret))
        if self.early and trial.status == "completed":
            write_median_thresholds(self.search_dir, self.journal)
        self.searcher.observe([self.row_of(trial)], [trial.observed_value])
        if trial.status == "failed":
            log.warning("trial %d failed: %s", trial.number, trial.error)
        self.progress.set_postfix(best=f"{self.searcher.best_value:.4g}",
                                  failed=sum(t.status == "failed" for t in self.trials.values()))
        self.progress.update(min(self.finished, self.n_trials) - self.progress.n)
        _check_failures(list(self.trials.values()), self.cfg.search)


def run_search(cfg: DictConfig, overrides: Sequence[str], search_dir: Path, launcher: Launcher,
               batch_size: int, pool: TierPool | None = None, journal: Journal | None = None,
               asynchronous: bool = False, queue_ahead: bool = False) -> list[Trial]:
    """Run (or resume) one search in `search_dir`; returns every trial, finished or not.

    Synchronous: rounds of `batch_size` jobs, each round waiting for its slowest job.
    Asynchronous: `batch_size` jobs in flight; each result is observed as it arrives and one new
    candidate is proposed with the running ones pending (the paper's server/worker design).
    `queue_ahead`: the launcher holds jobs beyond `batch_size` in a queue of its own (a fixed pool
    of workers), so one more job is handed over and starts the moment a worker frees."""
    journal = journal or open_journal(cfg, search_dir)  # before the pool: refused at once
    run = _SearchRun(cfg, overrides, search_dir, pool or load_tier_pool(cfg), journal)
    try:
        if asynchronous:
            _run_asynchronous(run, launcher, batch_size, queue_ahead)
        else:
            _run_synchronous(run, launcher, batch_size)
    finally:
        run.progress.close()
    return list(run.trials.values())


def _run_synchronous(run: _SearchRun, launcher: Launcher, batch_size: int) -> None:
    while run.finished < run.n_trials:
        batch = run.interrupted()[:batch_size] or run.propose(
            min(batch_size, run.n_trials - run.finished))
        if not batch:
            log.warning("the tier's pool is exhausted after %d trials", run.finished)
            return
        jobs = run.start(batch)
        with run.progress.suspended():  # the round's jobs (in this process: basic) own the terminal
            try:
                returns = launcher.launch(jobs, initial_job_idx=batch[0].job)
            except Exception as err:  # noqa: BLE001 - e.g. submitit's UncompletedJobError when a
                # cluster job ends without a result: the launcher loses the whole round, so take
                # each trial's result from its directory, and record the others failed
                returns = [_saved_return(run.search_dir, trial) or _failed_return(err)
                           for trial in batch]
        raise_if_interrupted()  # a Ctrl-C that the round's jobs turned into errors: not failures
        for trial, ret in zip(batch, returns, strict=True):
            run.finish(trial, ret)


LAUNCH_THREAD = "launch of trial "  # the name of each thread of `_launch_one`, then the number


def _launch_one(launcher: Launcher, job: list[str], trial: Trial, results: queue.Queue) -> None:
    """One job through the (blocking) launcher, in its own thread; the outcome goes to `results`."""
    try:
        results.put((trial, launcher.launch([job], initial_job_idx=trial.job)[0]))
    except BaseException as err:  # noqa: BLE001 - a launcher error is this trial's failure
        results.put((trial, _failed_return(err)))


def _saved_return(search_dir: Path, trial: Trial) -> JobReturn | None:
    """The return a trial's job saved in its directory (gpunet.search.job), if it finished."""
    from gpunet.search.job import saved_result

    result = saved_result(trial_dir(search_dir, trial), trial.encoding)
    if result is None:
        return None
    ret = JobReturn(status=JobStatus.COMPLETED)
    ret.return_value = result
    return ret


def _failed_return(err: BaseException) -> JobReturn:
    """What a job that never returned (its launcher raised) is recorded as."""
    ret = JobReturn(status=JobStatus.FAILED)
    ret.return_value = err
    return ret


def _run_asynchronous(run: _SearchRun, launcher: Launcher, workers: int,
                      queue_ahead: bool = False) -> None:
    """Keep `workers` jobs in flight. Results that arrive together (while the searcher was busy
    proposing) are all observed before the next proposal, which then fills every free slot at
    once: one searcher step per arrival, not per freed worker, so a searcher slower than the
    arrivals does not fall behind. One candidate is proposed ahead while the jobs run, so the next
    freed worker starts at once instead of waiting for the searcher (it has then seen one result
    fewer: as if one more job were in flight). With `queue_ahead` one more job is in flight, in
    the launcher's own queue: a freed worker then takes it at once, its launch (dispatch to a
    worker process, and the config it composes) already done, while the candidate proposed ahead
    becomes the next queued job."""
    results: queue.Queue = queue.Queue()
    waiting = run.interrupted()  # they run again first, pending for the searcher meanwhile
    for trial in waiting:
        run.searcher.mark_pending([run.row_of(trial)])
    ready: list[Trial] = []  # proposed ahead, pending for the searcher, not yet journaled
    in_flight, stopping, exhausted = 0, None, False
    capacity = workers + int(queue_ahead)  # jobs handed to the launcher: running, or queued there

    def propose(q: int) -> list[Trial]:
        nonlocal exhausted
        batch = run.propose(q)
        if len(batch) < q and not exhausted:
            log.warning("the tier's pool is exhausted after %d trials",
                        run.finished + in_flight + len(ready) + len(batch))
            exhausted = True
        return batch

    while True:
        free = min(capacity - in_flight, run.n_trials - run.finished - in_flight)
        if stopping is None and free > 0:
            batch, waiting = waiting[:free], waiting[free:]
            batch, ready = batch + ready[:free - len(batch)], ready[free - len(batch):]
            if len(batch) < free and not exhausted:
                batch += propose(free - len(batch))
            for trial, job in zip(batch, run.start(batch) if batch else []):
                # daemon: a killed or interrupted sweeper must not wait for its jobs to end
                threading.Thread(target=_launch_one, args=(launcher, job, trial, results),
                                 name=f"{LAUNCH_THREAD}{trial.number}", daemon=True).start()
                in_flight += 1
        if in_flight == 0:
            break
        if (stopping is None and not ready and not exhausted and not waiting
                and run.finished + in_flight < run.n_trials):
            ready = propose(1)
        arrived = [results.get()]
        while True:  # and whatever else finished meanwhile
            try:
                arrived.append(results.get_nowait())
            except queue.Empty:
                break
        raise_if_interrupted()  # a Ctrl-C swallowed on the way here: the arrivals are not recorded
        for trial, ret in arrived:
            in_flight -= 1
            try:
                run.finish(trial, ret)
            except TooManyFailures as stop:
                stopping = stop  # record what is still running, then stop
    if stopping is not None:
        raise TooManyFailures(str(stopping), list(run.trials.values()))


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
