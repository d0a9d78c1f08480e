"""The 41-integer encoding: round trips, invalid vectors, decoding into specs, Sobol sampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpunet.space import (
    canonical_encodings,
    decode,
    encode,
    encoding_to_spec,
    load_space,
    sobol_encodings,
    validate,
)

SPACE = load_space("gpunet")


@st.composite
def valid_vectors(draw):
    return [draw(st.integers(0, int(c) - 1)) for c in SPACE.cardinalities]


@given(valid_vectors())
@settings(max_examples=300, deadline=None)
def test_round_trip(vector):
    arch = decode(SPACE, vector)
    assert encode(SPACE, arch).tolist() == vector


@given(valid_vectors())
@settings(max_examples=100, deadline=None)
def test_decoded_spec_follows_the_digits(vector):
    arch = decode(SPACE, vector)
    spec = encoding_to_spec(SPACE, vector)
    assert spec.resolution == SPACE.resolutions[vector[0]]
    assert len(spec.layers) == sum(s.layers for s in arch.stages)
    assert spec.layers[0].out_channels == spec.layers[1].in_channels == SPACE.stages[0].fields[
        "filters"].choices[vector[1]]
    for stage in arch.stages:
        layers = [layer for layer in spec.layers if layer.stage == stage.index]
        assert len(layers) == stage.layers
        for j, layer in enumerate(layers):
            assert layer.stride == (stage.stride if j == 0 else 1)
            assert (layer.kernel, layer.act, layer.out_channels) == (stage.kernel, stage.act,
                                                                     stage.filters)
    assert spec.head.width == 1792


def test_stem_is_fixed_3x3_swish_and_stage1_shares_filters():
    spec = encoding_to_spec(SPACE, [0] * 41)
    stem, first = spec.layers[0], spec.layers[1]
    assert (stem.kernel, stem.stride, stem.act, stem.block) == (3, 2, "swish", "conv")
    assert first.in_channels == first.out_channels == stem.out_channels


def test_zero_layer_stage_is_left_out_but_round_trips():
    v = np.zeros(41, dtype=int)
    v[5 + 6 * 3 + 5] = 0  # stage 5 layers -> 0 layers
    v[5 + 6 * 5 + 5] = 0  # stage 7 layers -> 0 layers
    v[5 + 6 * 3] = 3      # stage 5 filters digit: kept in the architecture
    spec = encoding_to_spec(SPACE, v)
    assert {layer.stage for layer in spec.layers} == {0, 1, 2, 3, 4, 6}
    stage6 = [layer for layer in spec.layers if layer.stage == 6][0]
    stage4 = [layer for layer in spec.layers if layer.stage == 4][-1]
    assert stage6.in_channels == stage4.out_channels
    assert encode(SPACE, decode(SPACE, v)).tolist() == v.tolist()
    # A different (inert) filters digit gives the same network.
    w = v.copy()
    w[5 + 6 * 3] = 0
    assert encoding_to_spec(SPACE, w).layers == spec.layers


@pytest.mark.parametrize("vector, message", [
    ([0] * 40, "has 41 digits, got 40"),
    ([0] * 42, "has 41 digits, got 42"),
    ([10] + [0] * 40, r"digit 0 \(resolution\) is 10, out of range; allowed 0..9"),
    ([0, 2] + [0] * 39, r"digit 1 \(stage 0 filters\) is 2, out of range; allowed 0..1"),
    ([0] * 40 + [-1], r"digit 40 \(stage 7 layers\) is -1, out of range; allowed 0..15"),
    ([0] * 7 + [1.5] + [0] * 33, r"digit 7 \(stage 2 expansion\) is 1.5, not an integer"),
    ([0] * 3 + ["a"] + [0] * 37, r"digit 3 \(stage 1 act\) is 'a', not an integer"),
    ([True] + [0] * 40, r"digit 0 \(resolution\) is True, not an integer"),
    ([[0] * 41], "flat sequence"),
    ("0" * 41, "flat sequence"),
])
def test_invalid_vectors_name_the_digit(vector, message):
    with pytest.raises(ValueError, match=message):
        validate(SPACE, vector)


def test_integral_floats_and_numpy_ints_are_accepted():
    assert validate(SPACE, [1.0] + [0] * 40)[0] == 1
    assert validate(SPACE, np.zeros(41, dtype=np.int16)).dtype == np.int64


def test_encode_rejects_architecture_outside_the_space():
    arch = decode(SPACE, [0] * 41)
    stages = list(arch.stages)
    stages[2] = type(stages[2])(**{**stages[2].__dict__, "filters": 40})
    with pytest.raises(ValueError, match=r"stage 2 filters = 40 is not in the search space"):
        encode(SPACE, type(arch)(arch.resolution, tuple(stages)))


def test_sobol_is_valid_seeded_and_covers_every_choice():
    a = sobol_encodings(SPACE, 4096, seed=3)
    assert a.shape == (4096, 41) and a.dtype == np.int16
    assert (a >= 0).all() and (a < SPACE.cardinalities).all()
    for d, card in enumerate(SPACE.cardinalities):
        counts = np.bincount(a[:, d], minlength=card)
        # Uniform over choices: every choice within 10% of its share.
        assert np.all(np.abs(counts - 4096 / card) <= 0.1 * 4096 / card), (d, counts)
    assert np.array_equal(a, sobol_encodings(SPACE, 4096, seed=3))
    assert not np.array_equal(a, sobol_encodings(SPACE, 4096, seed=4))
    for row in a[:50]:
        validate(SPACE, row)


@pytest.mark.parametrize("name", ["cpu", "gpunet"])
def test_canonical_encodings_are_one_per_network(name):
    """Two encodings have one canonical form exactly when they decode to the same network:
    checked on every single-digit change of 12 Sobol encodings."""
    space = load_space(name)

    def network(x):
        spec = encoding_to_spec(space, x, num_classes=10).to_dict()
        spec.pop("name")  # the name spells the encoding out
        return spec

    X = sobol_encodings(space, 12, seed=5)
    C = canonical_encodings(space, X)
    assert (C != X).any()  # some drew an empty stage
    for x, c in zip(X, C):
        assert network(c) == network(x)
        for d in space.digits:
            for v in range(len(d.choices)):
                y = x.copy()
                y[d.position] = v
                same_network = network(y) == network(x)
                assert same_network == (canonical_encodings(space, y[None])[0] == c).all(), (d, v)
