"""The search's final check: its most accurate networks timed end to end, and the best one the
most accurate within the tier by measurement (real onnxruntime timings on this CPU)."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import yaml

from gpunet.latency.build import LatencySetup, fill
from gpunet.latency.end_to_end import EndToEnd
from gpunet.latency.keys import spec_probes
from gpunet.models import spec_cost
from gpunet.search.final_check import choose, measure_contenders, ranked
from gpunet.search.journal import Trial
from gpunet.search.outputs import OutputSettings, write_outputs
from gpunet.search.summary import final_check_lines
from gpunet.space import encoding_to_spec, load_space, sobol_encodings

CPU_SPACE = load_space("cpu")


def trial(number: int, value: float | None, status: str = "completed") -> Trial:
    return Trial(number, number, [0] * len(CPU_SPACE.cardinalities), 1.0, status=status, value=value)


def test_contenders_are_the_trials_with_a_value_most_accurate_first() -> None:
    trials = [trial(0, 0.5), trial(1, 0.9), trial(2, None, "failed"), trial(3, 0.7, "pruned"),
              trial(4, 0.9)]
    assert [t.number for t in ranked(trials)] == [1, 4, 3, 0]  # a tie goes to the earlier trial


def test_the_best_is_the_most_accurate_contender_measured_within_the_edge() -> None:
    contenders = [trial(7, 0.95), trial(3, 0.93), trial(5, 0.90)]
    best, why = choose(contenders, [1.30, 1.12, 1.05], edge_ms=1.10)
    assert best.number == 5
    assert "top 3" in why and "trial 7 (1.300 ms, 18.2% above); trial 3 (1.120 ms, 1.8% above)" in why
    best, why = choose(contenders, [1.0, 1.2, 0.9], edge_ms=1.10)
    assert best.number == 7 and "more accurate" not in why
    best, why = choose(contenders, [1.3, 1.2, 1.15], edge_ms=1.10)  # none fits: keep the most accurate
    assert best.number == 7 and "none of the top 3 measured within the tier" in why
    best, why = choose(contenders, None, edge_ms=1.10)
    assert best.number == 7 and "could not be measured" in why


def heavy_and_light(tmp_path, compose_cfg, *overrides: str) -> tuple[list[Trial], OutputSettings, float]:
    """Two trials, the more accurate one the heavier network, and an edge between them."""
    # the heaviest and the lightest of 32 Sobol networks: their end-to-end latencies differ
    # several-fold, so an edge at their geometric mean separates them on any machine
    encodings = [x.tolist() for x in sobol_encodings(CPU_SPACE, 32, seed=0)]
    macs = [spec_cost(encoding_to_spec(CPU_SPACE, x, num_classes=10)).macs for x in encodings]
    heavy, light = encodings[macs.index(max(macs))], encodings[macs.index(min(macs))]
    trials = [Trial(0, 0, heavy, 1.0, status="completed", value=0.9),
              Trial(1, 1, light, 1.0, status="completed", value=0.8)]
    cfg = compose_cfg(tmp_path, "objective=ackley", "search.final_check.rounds=2", *overrides, app="search")
    specs = [encoding_to_spec(CPU_SPACE, x, num_classes=10) for x in (heavy, light)]
    fill([p for spec in specs for p in spec_probes(spec)], LatencySetup.from_config(cfg), "test")
    settings = OutputSettings.from_config(cfg)
    first = settings.measure(specs, 2)
    assert first.speed > 0 and first.at_table_speed == [m / first.speed for m in first.ms]
    ms = first.at_table_speed
    assert ms[0] > 2 * ms[1], ms
    return trials, settings, (ms[0] * ms[1]) ** 0.5


def test_the_settling_measurements_are_discarded(tmp_path) -> None:
    """Seconds after the last training a first measurement reads high (final_check_noise.md): with
    settle=1 it is taken and thrown away, and the next one decides. The timings are scripted (a
    real machine's transient cannot be replayed); the real ones are the tests below."""
    readings = iter([[1.30, 0.90], [1.05, 0.95]])
    calls: list[int] = []

    def measure(specs, rounds):
        calls.append(rounds)
        return EndToEnd(next(readings), 1.0, {})

    where = {"device": "cpu", "backend": "onnxruntime"}
    contenders = [trial(0, 0.9), trial(1, 0.8)]
    measured = measure_contenders(tmp_path, contenders, [None, None], 3, measure, where, None, (), 0,
                                  settle=1)
    assert calls == [3, 3] and measured.result.ms == [1.05, 0.95]
    assert choose(contenders, measured.result.at_table_speed, edge_ms=1.10)[0].number == 0
    unsettled = measure_contenders(tmp_path, contenders, [None, None], 3,
                                   lambda specs, rounds: EndToEnd([1.30, 0.90], 1.0, {}), where, None, (), 0)
    assert choose(contenders, unsettled.result.at_table_speed, edge_ms=1.10)[0].number == 1


def test_a_search_ends_with_the_most_accurate_network_that_measures_within_the_tier(
        tmp_path, compose_cfg) -> None:
    trials, settings, edge = heavy_and_light(tmp_path, compose_cfg)
    light = trials[1].encoding
    best = write_outputs(tmp_path, trials, dataclasses.replace(settings, band=(0.0, edge)))

    assert best["trial"] == 1 and best["encoding"] == light and best["measured_at_table_speed_ms"] <= edge
    stored = yaml.safe_load((tmp_path / "best.yaml").read_text())
    check = stored["final_check"]
    assert [m["trial"] for m in check["measured"]] == [0, 1] and check["rounds"] == 2 and check["settle"] == 1
    assert check["speed"] > 0 and check["measured"][0]["at_table_speed_ms"] > edge
    assert check["measured"][0]["at_table_speed_ms"] == pytest.approx(
        check["measured"][0]["measured_latency_ms"] / check["speed"])
    assert "more accurate but measured above it: trial 0" in check["chosen"]
    excess = 100 * (check["measured"][0]["at_table_speed_ms"] / edge - 1)
    assert f"{excess:.1f}% above" in check["chosen"]
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["measured_latency_ms"]) > 0 for r in rows)
    lines = final_check_lines(stored, "ackley_value")
    assert "trial 0 (0.9, " in lines[0] and "> edge" in lines[0]
    assert "why trial 1: the most accurate" in lines[1]


@pytest.mark.parametrize("widen", [2, 1])
def test_when_none_of_the_top_fits_the_check_widens(tmp_path, compose_cfg, widen) -> None:
    """Only the heavier, more accurate network is timed first (top 1): it is above the edge, so
    the top `widen` are timed and the lighter one is the best; without widening it stays."""
    trials, settings, edge = heavy_and_light(tmp_path, compose_cfg, "search.final_check.top=1",
                                             f"search.final_check.widen={widen}")
    best = write_outputs(tmp_path, trials, dataclasses.replace(settings, band=(0.0, edge)))
    stored = yaml.safe_load((tmp_path / "best.yaml").read_text())
    check = stored["final_check"]
    if widen == 2:
        assert best["trial"] == 1 and check["widened_from"] == 1
        assert [m["trial"] for m in check["measured"]] == [0, 1]
        assert "none of the top 1 was within the tier" in final_check_lines(stored, "ackley_value")[0]
    else:
        assert best["trial"] == 0 and check["widened_from"] is None
        assert [m["trial"] for m in check["measured"]] == [0]
        assert "none of the top 1 measured within the tier" in check["chosen"]


def test_the_final_check_times_only_the_top_few(tmp_path, compose_cfg) -> None:
    encodings = [x.tolist() for x in sobol_encodings(CPU_SPACE, 3, seed=1)]
    trials = [Trial(i, i, x, 1.0, status="completed", value=float(i)) for i, x in enumerate(encodings)]
    cfg = compose_cfg(tmp_path, "objective=ackley", "search.final_check.top=2", "tier=1ms", app="search")
    write_outputs(tmp_path, trials, OutputSettings.from_config(cfg))
    with open(tmp_path / "results.csv") as f:
        measured = {int(r["number"]): r["measured_latency_ms"] for r in csv.DictReader(f)}
    assert measured[0] == "" and float(measured[1]) > 0 and float(measured[2]) > 0


@pytest.mark.parametrize("knob", ["top", "rounds", "widen"])
def test_a_final_check_of_nothing_is_refused(knob, composed) -> None:
    from gpunet.checks import check_search
    from gpunet.errors import ConfigError

    cfg = composed("search", f"search.final_check.{knob}=0")
    with pytest.raises(ConfigError, match=f"search.final_check.{knob}"):
        check_search(cfg)
