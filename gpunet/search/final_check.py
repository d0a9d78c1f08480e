"""A search's last step: time its most accurate networks end to end and name as best the most
accurate one that is in the tier by measurement.

A tier is defined by the latency table's estimate: quick enough to screen millions of networks,
but a sum of isolated layers, measured at one moment of a machine whose speed drifts, so a
network's end-to-end latency can sit 10-20% off it. The paper measures its networks as deployed
before it reports them; here the `top` trials by value are timed end to end in `rounds`
interleaved rounds, and the best network is the most accurate of them whose measured latency, at
the table's speed (gpunet.latency.end_to_end: the machine's drift since the table was built taken
out), is at most the tier's upper edge. When none is, the top `widen` are timed instead (one more
measurement, all of them together): a search that exploits the estimate can have its few best
networks all above the edge (on the CPU space's 2 ms tier, 16 of the 17 networks its model chose
measured 1.09-1.20x their estimate) while less accurate ones fit. When none of those is within
it either, the most accurate stays the best and best.yaml says that it measured above the tier.

They are timed where the device is: in the sweeper's process when the latency backend runs
there, else as one launcher job (`trial.kind=latency`) on the nodes the candidates ran on. When
neither can, the latencies are null, with a note saying why and how to fill them in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.plugins.launcher import Launcher

from gpunet.latency.end_to_end import EndToEnd
from gpunet.search.journal import Trial
from gpunet.search.loop import quote_value
from gpunet.space.spec import NetworkSpec

log = logging.getLogger(__name__)

# End-to-end latencies of networks timed in interleaved rounds (gpunet.latency.end_to_end);
# raises BackendUnavailable where the backend cannot run in this process.
Measure = Callable[[Sequence[NetworkSpec], int], EndToEnd]


@dataclass(frozen=True)
class FinalCheck:
    """search.final_check: how many of the most accurate trials are timed, in how many rounds,
    and how many when none of those is within the tier (`widen`)."""

    top: int
    rounds: int
    widen: int
    settle: int = 1  # measurements taken and discarded first: right after the last training, the
    #                  first read a median 6% above the next four (final_check_noise.md)

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> FinalCheck:
        return cls(int(node["top"]), int(node["rounds"]), int(node["widen"]),
                   int(node.get("settle", cls.settle)))  # absent from searches' configs before it


@dataclass(frozen=True)
class Measured:
    """The contenders' end-to-end latencies (in their order) and where they were taken, or why
    they could not be (`result` None)."""

    result: EndToEnd | None
    on: dict[str, Any] | None = None
    note: str | None = None

    def fields(self) -> dict[str, Any]:
        """How best.yaml says where its measurement comes from."""
        return {"measured_on": self.on} if self.result is not None else {"measured_latency_note": self.note}


def ranked(trials: Sequence[Trial]) -> list[Trial]:
    """The trials with a value, the most accurate first (ties: the earlier trial)."""
    scored = [t for t in trials if t.status in ("completed", "pruned") and t.value is not None]
    return sorted(scored, key=lambda t: (-t.value, t.number))


def choose(contenders: Sequence[Trial], ms: Sequence[float] | None, edge_ms: float) -> tuple[Trial, str]:
    """The best network of the most-accurate-first `contenders` and why: the first whose
    measured latency `ms` (at the table's speed) is at most the tier's upper edge; the first of
    all when none is, or when they could not be measured."""
    n = len(contenders)
    if ms is None:
        return contenders[0], "the most accurate trial (its latency could not be measured)"
    fits = [i for i, m in enumerate(ms) if m <= edge_ms]
    if not fits:
        return contenders[0], (f"the most accurate trial; none of the top {n} measured within the "
                               f"tier (<= {edge_ms:.3f} ms), so the best network is outside it")
    # how far above: a margin of a few % is inside the spread of timings on a drifting machine
    above = "; ".join(f"trial {t.number} ({m:.3f} ms, {100 * (m / edge_ms - 1):.1f}% above)"
                      for t, m in zip(contenders[:fits[0]], ms))
    return contenders[fits[0]], (
        f"the most accurate of the top {n} trials whose measured latency is within the tier "
        f"(<= {edge_ms:.3f} ms)" + (f"; more accurate but measured above it: {above}" if above else ""))


def _measured_on(context: Mapping[str, Any], where: str) -> dict[str, Any]:
    versions = {str(k): str(v) for k, v in (context.get("versions") or {}).items()}
    return {"where": where, "hardware": str(context.get("hardware")), "versions": versions}


def latency_job_overrides(base: Sequence[str], contenders: Sequence[Trial], rounds: int, num_classes: int,
                          search_dir: Path) -> list[str]:
    """The overrides of the launcher job that times the contenders (in `best_latency_topN`, so a
    widened check's second job leaves its own record beside the first's)."""
    encodings = ",".join(f"[{','.join(str(int(x)) for x in t.encoding)}]" for t in contenders)
    return [*base, "++trial.kind=latency", f"++trial.encodings=[{encodings}]", f"++trial.rounds={rounds}",
            f"++trial.num_classes={num_classes}",
            f"hydra.sweep.dir={quote_value(str(search_dir.resolve()))}",
            f"hydra.sweep.subdir=best_latency_top{len(contenders)}"]


def measure_contenders(search_dir: Path, contenders: Sequence[Trial], specs: Sequence[NetworkSpec],
                       rounds: int, measure: Measure, where: Mapping[str, str],
                       launcher: Launcher | None, overrides: Sequence[str], next_job: int,
                       settle: int = 0) -> Measured:
    """The contenders' end-to-end latencies: timed in this process when the backend runs here
    (after `settle` measurements that are discarded), else by a launcher job (numbered
    `next_job`, a fresh process on an idle node); null with a note when neither could.
    `where` names the config's `device` and `backend` for that note."""
    from gpunet.latency.backends import BackendUnavailable

    try:
        for _ in range(settle):
            measure(specs, rounds)
        measured = measure(specs, rounds)
        return Measured(measured, _measured_on(measured.context, "sweeper"))
    except BackendUnavailable as err:
        reason = f"the sweeper cannot run latency={where['backend']} ({err})"
    if launcher is not None:
        job = latency_job_overrides(overrides, contenders, rounds, specs[0].head.num_classes, search_dir)
        log.info("timing the %d most accurate networks end to end as a launcher job", len(contenders))
        [ret] = launcher.launch([job], initial_job_idx=next_job)
        try:
            result = ret.return_value  # re-raises the job's exception if it failed
        except Exception as err:  # noqa: BLE001 - any job error is the reason it is not measured
            result = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        if isinstance(result, dict) and result.get("status") == "completed":
            context = result.get("context") or {}
            return Measured(EndToEnd([float(m) for m in result["measured_latency_ms"]], result.get("speed"),
                                     context), _measured_on(context, "launcher job"))
        error = result.get("error") if isinstance(result, dict) else repr(result)
        reason += f", and neither could the launcher job sent to measure it ({error})"
    note = (f"not measured: {reason}. est_latency_ms is the table's estimate. To measure it, re-run "
            f"this search's command where latency={where['backend']} runs on device={where['device']} "
            "(it resumes: no trial runs again, and best.yaml is rewritten with the measurement)")
    log.warning("best.yaml: %s", note)
    return Measured(None, note=note)
