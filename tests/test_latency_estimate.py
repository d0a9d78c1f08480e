"""The estimate: the per-spec and vectorised sums agree exactly; missing entries are named."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_latency_support import all_encodings, synthetic_table, tiny_space

from gpunet.latency.estimate import (
    EncodingEstimator,
    MissingEntryError,
    estimate_encodings,
    estimate_spec,
    sum_spec,
)
from gpunet.latency.keys import spec_probes
from gpunet.latency.table import Calibration, LatencyTable
from gpunet.latency.timing import Timing
from gpunet.models import spec_cost
from gpunet.space import encoding_to_spec, load_space, released_spec, sobol_encodings

CPU = load_space("cpu")


@pytest.fixture(scope="module")
def cpu_table(tmp_path_factory):
    return synthetic_table(tmp_path_factory.mktemp("cpu") / "t.sqlite", CPU, num_classes=10)


def test_both_paths_agree_exactly_on_every_network_of_a_tiny_space(tmp_path):
    space = tiny_space()
    table = synthetic_table(tmp_path / "t.sqlite", space)
    X = all_encodings(space)
    fast = estimate_encodings(space, table, X, 10)
    slow = np.array([estimate_spec(encoding_to_spec(space, x, num_classes=10), table) for x in X])
    assert np.array_equal(fast, slow)
    # ... and the sum is the plain sum of the entries, layer by layer
    medians = table.medians_ns()
    spec = encoding_to_spec(space, X[-1], num_classes=10)
    assert fast[-1] == sum(medians[p.key] for p in spec_probes(spec)) / 1e6


@pytest.mark.parametrize("space_name", ["tiny", "cpu"])
def test_the_vectorised_parameter_count_is_the_specs(space_name, cpu_table, tmp_path):
    """The calibration's weights term: both paths count each network's parameters alike."""
    if space_name == "tiny":
        space = tiny_space()
        table, X = synthetic_table(tmp_path / "t.sqlite", space), all_encodings(space)
    else:
        space, table, X = CPU, cpu_table, sobol_encodings(CPU, 300, seed=4)
    params = EncodingEstimator(space, table, 10).sums(X).params
    assert params.tolist() == [spec_cost(encoding_to_spec(space, x, num_classes=10)).params for x in X]


def test_both_paths_agree_exactly_on_sobol_samples_of_the_cpu_space(cpu_table):
    X = sobol_encodings(CPU, 400, seed=3)
    fast = estimate_encodings(CPU, cpu_table, X, 10)
    slow = [estimate_spec(encoding_to_spec(CPU, x, num_classes=10), cpu_table) for x in X]
    assert fast.tolist() == slow


def test_an_estimator_built_once_answers_every_batch_as_a_fresh_estimate(cpu_table):
    """A search tests the encodings it breeds, batch after batch, with one estimator."""
    estimate = EncodingEstimator(CPU, cpu_table, 10)
    for seed in range(3):
        X = sobol_encodings(CPU, 50, seed=seed)
        assert estimate(X).tolist() == estimate_encodings(CPU, cpu_table, X, 10).tolist()
    assert estimate(X[:1]).shape == (1,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=41, max_size=41))
def test_both_paths_agree_on_random_encodings_calibrated_too(cpu_table, raw):
    x = np.array(raw) % CPU.cardinalities
    cpu_table.set_calibration(Calibration(0.93, 0.0021, -0.017, 0.12, 3.0, 40))
    spec = encoding_to_spec(CPU, x, num_classes=10)
    for calibrated in (False, True):
        assert estimate_encodings(CPU, cpu_table, x[None], 10, calibrated=calibrated)[0] == \
            estimate_spec(spec, cpu_table, calibrated=calibrated)


def test_calibration_is_a_linear_map_of_sum_entry_count_and_parameters(cpu_table):
    cal = Calibration(0.9, 0.004, 0.05, 0.12, 1.0, 10)
    cpu_table.set_calibration(cal)
    X = sobol_encodings(CPU, 50, seed=1)
    raw = estimate_encodings(CPU, cpu_table, X, 10)
    specs = [encoding_to_spec(CPU, x, num_classes=10) for x in X]
    entries = np.array([len(spec.layers) + 1 for spec in specs])
    mparams = np.array([spec_cost(spec).params / 1e6 for spec in specs])
    expected = cal.a * raw + cal.b * entries + cal.c + cal.d * mparams
    assert np.allclose(estimate_encodings(CPU, cpu_table, X, 10, calibrated=True), expected, rtol=1e-12)


def test_calibrated_estimate_without_calibration_says_what_to_run(tmp_path):
    space = tiny_space()
    table = synthetic_table(tmp_path / "t.sqlite", space)
    with pytest.raises(LookupError, match="python -m gpunet.latency.validate"):
        estimate_encodings(space, table, all_encodings(space)[:3], 10, calibrated=True)


def test_a_missing_entry_names_the_layer_and_the_command(tmp_path):
    space = tiny_space()
    full = synthetic_table(tmp_path / "full.sqlite", space)
    X = all_encodings(space)
    spec = encoding_to_spec(space, X[100], num_classes=10)
    dropped = spec_probes(spec)[3]
    partial = LatencyTable(tmp_path / "partial.sqlite", full.context)
    partial.put_many([(k, {}, Timing(ns / 1e6, ns / 1e6, 1)) for k, ns in full.medians_ns().items()
                      if k != dropped.key])
    for estimate in (lambda: estimate_spec(spec, partial), lambda: estimate_encodings(space, partial, X, 10)):
        with pytest.raises(MissingEntryError) as err:
            estimate()
        message = str(err.value)
        assert dropped.key in message and "python -m gpunet.latency.build" in message
        assert f"stage {dropped.part.stage}" in message


def test_the_head_size_follows_the_table_unless_given(tmp_path):
    space = tiny_space()
    table = synthetic_table(tmp_path / "t.sqlite", space, num_classes=10)
    X = all_encodings(space)[:5]
    assert estimate_encodings(space, table, X, 10).shape == (5,)
    with pytest.raises(MissingEntryError, match="the head"):
        estimate_encodings(space, table, X, num_classes=1000)


def test_any_network_spec_such_as_nvidia_gpunet_is_estimated(tmp_path):
    spec = released_spec("gpunet_0")
    table = LatencyTable(tmp_path / "t.sqlite", {"device": "test"})
    probes = spec_probes(spec)
    table.put_many([(p.key, p.fields(), Timing(0.01 * (i + 1), 0.02 * (i + 1), 3))
                    for i, p in enumerate(probes)])
    distinct = {p.key: i for i, p in enumerate(probes)}  # a repeated layer counts every time
    expected = sum(10_000 * (distinct[p.key] + 1) for p in probes)
    assert sum_spec(spec, table) == (expected, len(probes), spec_cost(spec).params)
    assert estimate_spec(spec, table) == expected / 1e6


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 40), dtype=np.int64), r"shape \(N, 41\)"),
    (np.zeros((3, 41)), "integer dtype"),
    (np.full((2, 41), 5), r"digit 0 \(resolution\) is 5, out of range; allowed 0..2"),
])
def test_bad_encodings_are_refused(cpu_table, bad, match):
    with pytest.raises(ValueError, match=match):
        estimate_encodings(CPU, cpu_table, bad, 10)


def test_a_value_outside_the_lookup_raises_instead_of_reading_index_minus_one(tmp_path, monkeypatch):
    """The look-up arrays cover the values `reach` enumerates; any other value (here: the 32 px
    rows of a space whose reach was taken for 40 px only) must be an error naming it, never
    index -1, which reads the last entry of the look-up without a word."""
    from test_latency_support import TINY

    from gpunet.latency import estimate
    from gpunet.space.search_space import space_from_config

    space = tiny_space()  # resolutions 32 and 40
    table = synthetic_table(tmp_path / "t.sqlite", space)
    narrow = space_from_config({**TINY, "resolutions": [40]})
    real_reach = estimate.reach
    monkeypatch.setattr(estimate, "reach", lambda _space, n: real_reach(narrow, n))
    X = all_encodings(space)
    X = X[X[:, 0] == 0][:4]  # 32 px
    with pytest.raises(ValueError, match=r"stage 0 input size 32 is not one of .*: \[40\]"):
        estimate.sum_encodings(space, table, X, 10)
