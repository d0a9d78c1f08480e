"""One job of a search, in a worker: evaluate one candidate (train it, or a synthetic objective),
or measure the end-to-end latency of the best networks (`trial.kind=latency`).

This runs wherever the Hydra launcher puts it (a local process, a SLURM node, a Ray worker), so
it only reads its composed config and returns a plain dict the sweeper records. The latency
kind lets a sweeper that runs where the device is not (a CPU login node) measure on the nodes
that have it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gpunet.files import write_json
from gpunet.space import encoding_to_spec, space_from_config

log = logging.getLogger(__name__)
LOCK_FILE = ".trial.lock"  # held by the job that runs the trial
RESULT_FILE = "result.json"  # what the job returned, for a re-run sweeper whose journal lacks it


TRIAL_KINDS = ("candidate", "latency")


def measure_latency(cfg: DictConfig) -> dict[str, Any]:
    """The end-to-end latencies of `cfg.trial.encodings` (heads of `trial.num_classes`, else the
    data's classes) with cfg's device and backend, timed in `trial.rounds` interleaved rounds,
    the machine's speed against the table and the context they were measured in
    (gpunet.latency.end_to_end)."""
    from gpunet.latency.backends import BackendUnavailable
    from gpunet.latency.build import LatencySetup, head_classes
    from gpunet.latency.end_to_end import measure_end_to_end

    start = time.perf_counter()
    space = space_from_config(cfg.search_space)
    num_classes = int(cfg.trial.get("num_classes") or head_classes(cfg))
    specs = [encoding_to_spec(space, [int(x) for x in encoding], num_classes=num_classes)
             for encoding in cfg.trial.encodings]
    try:
        measured = measure_end_to_end(specs, LatencySetup.from_config(cfg), int(cfg.trial.get("rounds") or 1))
    except BackendUnavailable as err:
        return {"status": "failed", "error": f"{type(err).__name__}: {err}",
                "duration_s": time.perf_counter() - start}
    return {"status": "completed", "measured_latency_ms": measured.ms, "speed": measured.speed,
            "context": measured.context, "duration_s": time.perf_counter() - start}


def run_trial(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.trial.encoding`; failures come back as a status, not an exception.

    `trial.kind` (absent: candidate) says what the job does: evaluate a candidate, or measure
    the best networks' end-to-end latency (`latency`, see `measure_latency`)."""
    kind = cfg.trial.get("kind") or "candidate"
    if kind not in TRIAL_KINDS:
        raise ValueError(f"trial.kind={kind!r} is not one of {list(TRIAL_KINDS)}")
    needed = "encodings" if kind == "latency" else "encoding"
    if cfg.trial.get(needed) is None:
        raise ValueError(f"a search job needs trial.{needed}: run `python -m gpunet.search` "
                         "(multirun with the gpunet sweeper), not a single job")
    if kind == "latency":
        return measure_latency(cfg)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    with one_job_per_trial(output_dir, int(cfg.trial.number)):
        earlier = saved_result(output_dir, list(cfg.trial.encoding))
        if earlier is not None:
            log.info("trial %d was finished by an earlier job (its sweeper never recorded it): "
                     "not running it again", int(cfg.trial.number))
            return earlier
        out = _evaluate_candidate(cfg, output_dir)
        encoding = [int(x) for x in cfg.trial.encoding]  # before the lock is released:
        write_json(output_dir / RESULT_FILE, {"encoding": encoding, "result": out})
    return out


@contextmanager
def one_job_per_trial(output_dir: Path, number: int) -> Iterator[None]:
    """Hold the trial's lock while its job runs. A job that outlived a killed sweeper (a SLURM
    job does) and the job the re-run sweeper starts for the same trial would otherwise both train
    in one directory; the second waits for the first instead. The kernel releases the lock when
    its holder dies, however it dies. (On a shared filesystem, flock needs lock support: NFSv4
    and Lustre with `-o flock` have it.)"""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            log.warning("trial %d: another job of this trial still runs (%s); waiting for it to end",
                        number, lock.read().strip() or "holder unknown")
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"host {socket.gethostname()} pid {os.getpid()}\n")
        lock.flush()
        yield


def saved_result(output_dir: Path, encoding: list[int]) -> dict[str, Any] | None:
    """What a job of this trial returned, as it saved it in the trial's directory: for a job of a
    re-run sweeper (the first sweeper died before recording it), or for a sweeper whose launcher
    lost the job's return (a cluster job array with one task cancelled). None when no job of this
    candidate finished."""
    path = output_dir / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved["result"] if saved.get("encoding") == [int(x) for x in encoding] else None


def _evaluate_candidate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    from gpunet.search.objectives import evaluate_objective, trains  # BoTorch: only when needed

    start, started_at = time.perf_counter(), time.time()
    space = space_from_config(cfg.search_space)
    encoding = [int(x) for x in cfg.trial.encoding]
    if trains(cfg.objective):
        from gpunet.latency.build import head_classes
        from gpunet.train.run import fit_candidate

        head_classes(cfg)  # data.num_classes agrees with the class folders, before training
        spec = encoding_to_spec(space, encoding)  # the head is sized by the data's classes
        result = fit_candidate(cfg, spec, output_dir)
        out = {"status": result.status, "value": result.best_top1, "curve": list(result.curve),
               "error": result.error, "epochs": result.epochs, "num_classes": result.num_classes,
               # a resumed trial: its earlier attempts' training time (carried in last.ckpt)
               "duration_before_resume_s": result.seconds_before_resume}
    else:
        value = evaluate_objective(cfg.objective, encoding, space.cardinalities)
        out = {"status": "completed", "value": value, "curve": [], "error": None}
    # when it ran (wall clock), so schedules can be checked: overlap, idle workers; duration_s is
    # the whole trial's, earlier attempts of a resumed one included
    out.update(duration_s=time.perf_counter() - start + out.get("duration_before_resume_s", 0.0),
               started_at=started_at, ended_at=time.time())
    return out
