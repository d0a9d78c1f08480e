"""The integer encoding of Table 2: vector <-> Architecture (stage level) -> NetworkSpec.

Every digit is the 0-based index into its field's list of choices in the search space (so a
digit's range is 0..len(choices)-1 and Sobol sampling and the searchers treat all digits alike).
`Architecture` keeps every stage, including 0-layer ones, so `encode(decode(v)) == v` holds for
every valid vector even though a 0-layer stage does not change the network.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpunet.errors import ConfigError
from gpunet.space.search_space import FIELD_ORDER, SearchSpace
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec


@dataclass(frozen=True)
class StageConfig:
    """One stage with every hyper-parameter chosen."""

    index: int
    block: str
    stride: int
    filters: int
    kernel: int
    expansion: float
    se: bool
    act: str
    layers: int


@dataclass(frozen=True)
class Architecture:
    resolution: int
    stages: tuple[StageConfig, ...]


def check_encodings(encodings: np.ndarray, cardinalities: Sequence[int] | np.ndarray,
                    what: str = "encodings",
                    digit_names: Sequence[str] | None = None) -> np.ndarray:
    """Check an (N, D) integer array of encodings against the D digits' cardinalities; return it
    as an array (its dtype kept: pools are int16 and large). The one validator of encoding arrays:
    a ConfigError names the shape, the dtype, or the first digit out of range and a row holding it
    (`digit_names[d]` says what digit d means, when given)."""
    enc = np.asarray(encodings)
    card = np.asarray(cardinalities)
    if enc.ndim != 2 or enc.shape[1] != card.size:
        raise ConfigError(f"{what}: shape {enc.shape}; expected an integer array of shape "
                          f"(N, {card.size}), one column per digit")
    if not np.issubdtype(enc.dtype, np.integer):
        raise ConfigError(f"{what}: dtype {enc.dtype}; expected an integer dtype (e.g. int16)")
    if len(enc):  # column extremes first: one pass over a large pool when all is well
        bad_digits = np.flatnonzero((enc.min(axis=0) < 0) | (enc.max(axis=0) >= card))
        if bad_digits.size:
            d = int(bad_digits[0])
            row = int(np.flatnonzero((enc[:, d] < 0) | (enc[:, d] >= card[d]))[0])
            name = f" ({digit_names[d]})" if digit_names is not None else ""
            raise ConfigError(f"{what} row {row}: digit {d}{name} is {enc[row, d]}, out of range; "
                              f"allowed 0..{card[d] - 1}")
    return enc


def check_space_encodings(space: SearchSpace, encodings: np.ndarray) -> np.ndarray:
    """`check_encodings` against `space`'s digits, naming them."""
    return check_encodings(encodings, space.cardinalities, f"encodings of space {space.name!r}",
                           [d.meaning for d in space.digits])


def validate(space: SearchSpace, vector: Sequence[int] | np.ndarray) -> np.ndarray:
    """Check one encoding and return it as int64; a ConfigError names the first bad digit."""
    digits = space.digits
    values = np.asarray(vector, dtype=object) if not isinstance(vector, (str, bytes)) else None
    if values is None or values.ndim != 1:
        raise ConfigError(f"an encoding is a flat sequence of {len(digits)} integers, got {vector!r}")
    if len(values) != len(digits):
        raise ConfigError(f"an encoding of search space {space.name!r} has {len(digits)} digits, "
                          f"got {len(values)}")
    for digit, value in zip(digits, values):
        integral = isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and float(value).is_integer())
        if isinstance(value, (bool, np.bool_)) or not integral:
            raise ConfigError(f"digit {digit.position} ({digit.meaning}) is {value!r}, not an "
                              f"integer; allowed 0..{len(digit.choices) - 1} (an index into "
                              f"{list(digit.choices)})")
    return check_space_encodings(space, values.astype(np.int64)[None, :])[0]


def canonical_encodings(space: SearchSpace, encodings: np.ndarray) -> np.ndarray:
    """One encoding per network: (N, D) encodings with the digits a network ignores set to 0.

    A stage of 0 layers builds nothing, so its other digits (filters, kernel, expansion, SE,
    activation; filters kept when the next stage shares them) do not change the network: the
    CPU space has 32 encodings of every network with one empty stage. A searcher that told them
    apart would train one network several times."""
    X = np.array(encodings, dtype=np.int64, copy=True).reshape(-1, space.length)
    by_field = {(d.stage, d.field): d for d in space.digits}
    for s in space.stages:
        layers = s.fields["layers"]
        if 0 not in layers.choices:
            continue
        empty = (X[:, by_field[(s.index, "layers")].position] == layers.choices.index(0)
                 if layers.searched else np.ones(len(X), dtype=bool))
        shared_next = s.index + 1 < len(space.stages) and space.stages[s.index + 1].shares_filters
        ignored = [d.position for d in space.digits if d.stage == s.index and d.field != "layers"
                   and not (d.field == "filters" and shared_next)]
        X[np.ix_(empty, ignored)] = 0
    return X


def decode(space: SearchSpace, vector: Sequence[int] | np.ndarray) -> Architecture:
    """Encoding -> Architecture."""
    v = validate(space, vector)
    chosen: dict[tuple[int | None, str], object] = {
        (d.stage, d.field): d.choices[v[d.position]] for d in space.digits}
    stages, filters = [], 0
    for s in space.stages:
        values = {}
        for name in FIELD_ORDER:
            if name == "filters" and s.shares_filters:
                values[name] = filters
            elif s.fields[name].searched:
                values[name] = chosen[(s.index, name)]
            else:
                values[name] = s.fields[name].fixed_value
        filters = int(values["filters"])
        stages.append(StageConfig(s.index, s.block, s.stride, filters, int(values["kernel"]),
                                  float(values["expansion"]), bool(values["se"]),
                                  str(values["act"]), int(values["layers"])))
    return Architecture(int(chosen[(None, "resolution")]), tuple(stages))


def encode(space: SearchSpace, arch: Architecture) -> np.ndarray:
    """Architecture -> encoding; a ValueError names the value that is not in the space."""
    if len(arch.stages) != len(space.stages):
        raise ConfigError(f"architecture has {len(arch.stages)} stages, space {space.name!r} has "
                          f"{len(space.stages)}")
    out = np.empty(space.length, dtype=np.int64)
    out[0] = _index_of(space.resolutions, arch.resolution, "resolution")
    position = 1
    for s, stage in zip(space.stages, arch.stages):
        if s.shares_filters and stage.filters != arch.stages[s.index - 1].filters:
            raise ConfigError(f"stage {s.index} shares its filters with stage {s.index - 1}: "
                              f"{stage.filters} != {arch.stages[s.index - 1].filters}")
        for name in FIELD_ORDER:
            if name not in s.fields:
                continue
            field, value = s.fields[name], getattr(stage, name)
            where = f"stage {s.index} {name}"
            if field.searched:
                out[position] = _index_of(field.choices, value, where)
                position += 1
            elif value != field.fixed_value:
                raise ConfigError(f"{where} is fixed at {field.fixed_value!r} in space "
                                  f"{space.name!r}, got {value!r}")
    return out


def _index_of(choices: Sequence, value: object, where: str) -> int:
    for i, choice in enumerate(choices):
        if choice == value:
            return i
    raise ConfigError(f"{where} = {value!r} is not in the search space; allowed {list(choices)}")


def architecture_to_spec(arch: Architecture, head_width: int, num_classes: int = 1000,
                         name: str | None = None) -> NetworkSpec:
    """Stage-level architecture -> layer-level spec. The first layer of a stage takes its stride."""
    layers, in_channels = [], 3
    for stage in arch.stages:
        for j in range(stage.layers):
            layers.append(LayerSpec(stage.block, in_channels, stage.filters,
                                    stage.stride if j == 0 else 1, stage.kernel, stage.act,
                                    stage.expansion, stage.se, stage.index))
            in_channels = stage.filters
    return NetworkSpec(arch.resolution, tuple(layers), HeadSpec(in_channels, head_width, num_classes),
                       name=name)


def encoding_to_spec(space: SearchSpace, vector: Sequence[int] | np.ndarray,
                     num_classes: int = 1000) -> NetworkSpec:
    """Encoding -> NetworkSpec, the path every consumer of an encoding takes."""
    v = validate(space, vector)
    name = f"{space.name}-" + "-".join(str(int(x)) for x in v)
    return architecture_to_spec(decode(space, v), space.head_width, num_classes, name=name)
