"""A network's estimated latency: the sum of its layers' (and head's) table entries (paper §3.2).

Two paths add the same integers (every entry's median in nanoseconds, `LatencyTable.medians_ns`)
so they agree exactly: `estimate_spec` walks any NetworkSpec's layers (including NVIDIA's JSON
networks), `estimate_encodings` does the same sum for an (N, D) array of encodings with numpy
look-up arrays, stage by stage, so millions of networks take about a second. A stored calibration
(gpunet.latency.validate) optionally maps the sum, the number of entries and the network's
parameter count (both paths count them alike) to the end-to-end latency.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gpunet.errors import GpunetError
from gpunet.latency.keys import Probe, head_key_of, layer_key_of, spec_probes
from gpunet.latency.space_keys import StageReach, reach
from gpunet.latency.table import Calibration, LatencyTable
from gpunet.models.profile import head_cost, layer_params, spec_cost
from gpunet.space.encoding import check_space_encodings, encoding_to_spec
from gpunet.space.search_space import SearchSpace, StageSpace
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec, conv_output_size

VARIANT_FIELDS = ("kernel", "expansion", "se", "act")
MISSING = -1


class MissingEntryError(GpunetError, LookupError):
    """A layer of the network has no entry in the latency table."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


def fill_command(table: LatencyTable) -> str:
    """The command that measures missing entries into `table`."""
    ctx = table.context
    return (f"python -m gpunet.latency.build device={ctx.get('device')} latency={ctx.get('backend')} "
            f"latency.table={table.path} search_space=<the network's space> "
            "(or arch=<the network> for any network)")


def _missing(table: LatencyTable, probe: Probe, where: str) -> MissingEntryError:
    return MissingEntryError(
        f"no latency-table entry for {where} [{probe.key}] in {table.path} (context: device "
        f"{table.context.get('device')}, backend {table.context.get('backend')}); measure it with: "
        f"{fill_command(table)}")


class Sums(NamedTuple):
    """What an estimate is made of, per network: ints, or int64 arrays on the vectorised path."""

    total_ns: np.ndarray | int  # the sum of its entries' medians
    entries: np.ndarray | int  # how many entries (layers and the head)
    params: np.ndarray | int  # its parameters (the calibration's weights term)


def sum_spec(spec: NetworkSpec, table: LatencyTable,
             medians_ns: dict[str, int] | None = None) -> Sums:
    """The network's sum of entries, their number and its parameters."""
    medians = table.medians_ns() if medians_ns is None else medians_ns
    total = 0
    probes = spec_probes(spec)
    for i, probe in enumerate(probes):
        if probe.key not in medians:
            where = "the head" if probe.is_head else f"layer {i} (stage {probe.part.stage})"
            raise _missing(table, probe, f"{where} of network {spec.name or '<unnamed>'}")
        total += medians[probe.key]
    return Sums(total, len(probes), spec_cost(spec).params)


def _to_ms(sums: Sums, calibration: Calibration | None) -> np.ndarray:
    """The one conversion both paths use (so calibrated estimates agree exactly too)."""
    ms = np.asarray(sums.total_ns).astype(np.float64) / 1e6
    if calibration is None:
        return ms
    return calibration.apply(ms, np.asarray(sums.entries).astype(np.float64),
                             np.asarray(sums.params).astype(np.float64) / 1e6)


def _calibration(table: LatencyTable, calibrated: bool) -> Calibration | None:
    if not calibrated:
        return None
    calibration = table.calibration()
    if calibration is None:
        raise LookupError(f"{table.path} has no calibration for this context; fit one with "
                          f"`python -m gpunet.latency.validate device={table.context.get('device')} "
                          f"latency={table.context.get('backend')}` or set latency.calibrated=false")
    return calibration


def estimate_spec(spec: NetworkSpec, table: LatencyTable, calibrated: bool = False) -> float:
    """Estimated latency of one network in ms (the table's calibration applied if `calibrated`)."""
    return float(_to_ms(sum_spec(spec, table), _calibration(table, calibrated)))


# -- the vectorised path ------------------------------------------------------------------------
@dataclass(frozen=True)
class _StageLUT:
    """Entries of one stage in dense arrays (MISSING where the table has none), and the
    parameters of the same layers (`*_params`, broadcast over the input sizes)."""

    stage_reach: StageReach
    first: np.ndarray  # [size, in channels, filters, kernel, expansion, se, act] indices
    rest_sizes: np.ndarray
    rest: np.ndarray  # [size after the first layer, filters, kernel, expansion, se, act]
    first_params: np.ndarray
    rest_params: np.ndarray


@functools.cache
def _layer_params(block: str, cin: int, cout: int, kernel: int, expansion: float, se: bool) -> int:
    """A layer's parameters (neither its stride, activation nor input size changes them)."""
    return layer_params(LayerSpec(block, cin, cout, 1, kernel, "relu", expansion, se))


def _stage_lut(stage: StageSpace, r: StageReach, medians: dict[str, int]) -> _StageLUT:
    choices = [stage.fields[n].choices for n in VARIANT_FIELDS]
    shape = tuple(len(c) for c in choices)
    rest_sizes = sorted({conv_output_size(s, stage.stride) for s in r.sizes})
    first = np.full((len(r.sizes), len(r.in_channels), len(r.filters), *shape), MISSING, np.int64)
    rest = np.full((len(rest_sizes), len(r.filters), *shape), MISSING, np.int64)
    first_params = np.zeros((1, *first.shape[1:]), np.int64)
    rest_params = np.zeros((1, *rest.shape[1:]), np.int64)
    variants = list(itertools.product(*(range(n) for n in shape)))
    for (fi, f), (ki, ei, si, ai) in itertools.product(enumerate(r.filters), variants):
        k, e, se, act = (c[i] for c, i in zip(choices, (ki, ei, si, ai)))
        for ci, cin in enumerate(r.in_channels):
            first_params[0, ci, fi, ki, ei, si, ai] = _layer_params(stage.block, cin, f, k, e, se)
            for zi, size in enumerate(r.sizes):
                key = layer_key_of(stage.block, cin, f, stage.stride, k, act, e, se, size)
                first[zi, ci, fi, ki, ei, si, ai] = medians.get(key, MISSING)
        rest_params[0, fi, ki, ei, si, ai] = _layer_params(stage.block, f, f, k, e, se)
        for zi, size in enumerate(rest_sizes):
            key = layer_key_of(stage.block, f, f, 1, k, act, e, se, size)
            rest[zi, fi, ki, ei, si, ai] = medians.get(key, MISSING)
    return _StageLUT(r, first, np.array(rest_sizes), rest, np.broadcast_to(first_params, first.shape),
                     np.broadcast_to(rest_params, rest.shape))


def _positions(values: tuple[int, ...], x: np.ndarray, what: str) -> np.ndarray:
    """The index in `values` of every element of `x` (small ints: sizes and channel counts).

    A value that is not in `values` raises a ValueError naming it and the allowed ones (it would
    otherwise become index -1 and silently read another entry)."""
    allowed = [int(v) for v in values]
    x = np.asarray(x)
    lookup = np.full(max(allowed) + 1, -1, dtype=np.intp)
    lookup[allowed] = np.arange(len(allowed))
    inside = (x >= 0) & (x < len(lookup))
    out = np.full(x.shape, -1, dtype=np.intp)
    out[inside] = lookup[x[inside]]
    if (out < 0).any():
        bad = int(x[out < 0].flat[0])
        raise ValueError(f"{what} {bad} is not one of the values the latency look-up covers: "
                         f"{sorted(allowed)}")
    return out


class EncodingEstimator:
    """The vectorised estimate with its look-up arrays built once (the table's medians, one array
    per stage and the head's): estimating many small batches (a searcher testing the encodings it
    breeds against a tier) would otherwise spend most of its time rebuilding them."""

    def __init__(self, space: SearchSpace, table: LatencyTable, num_classes: int,
                 calibrated: bool = False) -> None:
        self.space, self.table = space, table
        self.medians = table.medians_ns()
        self.reach = reach(space, num_classes)
        self.num_classes = num_classes
        self.luts = [_stage_lut(stage, stage_reach, self.medians)
                     for stage, stage_reach in zip(space.stages, self.reach.stages)]
        r = self.reach
        self.heads = np.full((len(r.head_sizes), len(r.head_in_channels)), MISSING, np.int64)
        self.head_params = np.zeros(len(r.head_in_channels), np.int64)
        for ci, c in enumerate(r.head_in_channels):
            self.head_params[ci] = head_cost(HeadSpec(c, space.head_width, num_classes), 1).params
            for zi, s in enumerate(r.head_sizes):
                self.heads[zi, ci] = self.medians.get(
                    head_key_of(c, space.head_width, num_classes, s), MISSING)
        self.calibration = _calibration(table, calibrated)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Estimated latency in ms of every encoding (row) of X, shape (N,) float64."""
        return _to_ms(self.sums(X), self.calibration)

    def sums(self, X: np.ndarray) -> Sums:
        """The sums of every row of X: int64 arrays (N,)."""
        space, r = self.space, self.reach
        X = check_space_encodings(space, X)
        columns = {(d.stage, d.field): d.position for d in space.digits}

        def choice_index(stage: StageSpace, name: str) -> np.ndarray | int:
            position = columns.get((stage.index, name))
            return 0 if position is None else X[:, position].astype(np.intp)

        n = len(X)
        size = np.asarray(space.resolutions, dtype=np.int64)[X[:, 0].astype(np.intp)]
        cin = np.full(n, 3, dtype=np.int64)
        prev = np.zeros(n, dtype=np.int64)
        total = np.zeros(n, dtype=np.int64)
        entries = np.ones(n, dtype=np.int64)  # the head
        params = np.zeros(n, dtype=np.int64)
        missing = np.zeros(n, dtype=bool)
        for stage, stage_reach, lut in zip(space.stages, r.stages, self.luts):
            choices = {name: np.asarray(stage.fields[name].choices) for name in ("filters", "layers")
                       if name in stage.fields}
            f = prev if stage.shares_filters else choices["filters"][choice_index(stage, "filters")]
            layers = np.broadcast_to(choices["layers"][choice_index(stage, "layers")], (n,))
            variant = tuple(choice_index(stage, name) for name in VARIANT_FIELDS)
            where = f"stage {stage.index}"
            fi = _positions(stage_reach.filters, f, f"{where} filters")
            first_at = (_positions(stage_reach.sizes, size, f"{where} input size"),
                        _positions(stage_reach.in_channels, cin, f"{where} input channels"),
                        fi, *variant)
            first = lut.first[first_at]
            out_size = conv_output_size(size, stage.stride)
            rest_at = (_positions(tuple(lut.rest_sizes), out_size, f"{where} repeated-layer size"),
                       fi, *variant)
            rest = lut.rest[rest_at]
            active, repeated = layers > 0, layers > 1
            missing |= (active & (first == MISSING)) | (repeated & (rest == MISSING))
            total += np.where(active, first, 0) + np.where(repeated, (layers - 1) * rest, 0)
            params += (np.where(active, lut.first_params[first_at], 0)
                       + np.where(repeated, (layers - 1) * lut.rest_params[rest_at], 0))
            entries += layers
            size = np.where(active, out_size, size)
            cin = np.where(active, f, cin)
            prev = np.broadcast_to(f, (n,))
        head_cin = _positions(r.head_in_channels, cin, "head input channels")
        head = self.heads[_positions(r.head_sizes, size, "head input size"), head_cin]
        missing |= head == MISSING
        if missing.any():
            row = int(np.argmax(missing))
            # The per-spec path names the first missing layer of this network.
            sum_spec(encoding_to_spec(space, X[row], self.num_classes), self.table, self.medians)
            raise RuntimeError(f"encoding row {row} misses a table entry that its spec does not")
        return Sums(total + head, entries, params + self.head_params[head_cin])


def sum_encodings(space: SearchSpace, table: LatencyTable, X: np.ndarray, num_classes: int) -> Sums:
    """The sums of every row of X, whose head classifies `num_classes` classes; int64 arrays of
    shape (N,)."""
    return EncodingEstimator(space, table, num_classes).sums(X)


def estimate_encodings(space: SearchSpace, table: LatencyTable, X: np.ndarray,
                       num_classes: int, calibrated: bool = False) -> np.ndarray:
    """Estimated latency in ms of every encoding (row) of X, shape (N,) float64 (the head of
    `num_classes` classes)."""
    return EncodingEstimator(space, table, num_classes, calibrated)(X)
