"""Every table key a search space can produce, found by walking the stages once.

A layer's key depends on the stage's choices and on what enters the stage: the spatial size, the
channels of the last non-empty stage and (for `filters: shared`) the previous stage's filters.
Walking the set of such states stage by stage enumerates the reachable keys without touching the
astronomically many networks, and gives the vectorised estimate the values each stage can see.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from gpunet.latency.keys import Probe
from gpunet.space.search_space import SearchSpace, StageSpace
from gpunet.space.spec import HeadSpec, LayerSpec, conv_output_size

# (spatial size, channels entering, previous stage's filters) before a stage.
State = tuple[int, int, int]


@dataclass(frozen=True)
class StageReach:
    """What can enter one stage and the layer positions it can hold."""

    stage: StageSpace
    sizes: tuple[int, ...]  # spatial sizes entering (sorted)
    in_channels: tuple[int, ...]  # channels entering (sorted)
    filters: tuple[int, ...]  # output filters (sorted)
    firsts: frozenset[tuple[int, int, int]]  # first layer: (size, in channels, filters)
    rests: frozenset[tuple[int, int]]  # later layers: (size, filters); empty if it never repeats

    def probes(self) -> list[Probe]:
        stage = self.stage
        out = [p for size, cin, f in sorted(self.firsts)
               for p in _layer_probes(stage, cin, f, stage.stride, size)]
        return out + [p for size, f in sorted(self.rests) for p in _layer_probes(stage, f, f, 1, size)]


@dataclass(frozen=True)
class SpaceReach:
    stages: tuple[StageReach, ...]
    head_width: int
    num_classes: int
    head_inputs: frozenset[tuple[int, int]]  # (size, channels) entering the head

    @property
    def head_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({s for s, _ in self.head_inputs}))

    @property
    def head_in_channels(self) -> tuple[int, ...]:
        return tuple(sorted({c for _, c in self.head_inputs}))

    def probes(self) -> list[Probe]:
        """Every distinct table key of the space: layers in stage order, then the heads."""
        out = [p for stage in self.stages for p in stage.probes()]
        out += [Probe(HeadSpec(cin, self.head_width, self.num_classes), (cin, size, size))
                for size, cin in sorted(self.head_inputs)]
        return list({p.key: p for p in out}.values())


def _choices(stage: StageSpace, name: str) -> tuple:
    return stage.fields[name].choices


def _layer_probes(stage: StageSpace, in_channels: int, out_channels: int, stride: int,
                  size: int) -> list[Probe]:
    """The probes of one layer position for every kernel/expansion/SE/activation choice."""
    variants = itertools.product(*(_choices(stage, n) for n in ("kernel", "expansion", "se", "act")))
    return [Probe(LayerSpec(stage.block, in_channels, out_channels, stride, k, act, float(e),
                            bool(se), stage.index), (in_channels, size, size))
            for k, e, se, act in variants]


def reach(space: SearchSpace, num_classes: int = 1000) -> SpaceReach:
    """Walk the stages of `space` from every resolution (the stem takes 3 channels)."""
    states: set[State] = {(r, 3, 0) for r in space.resolutions}
    stages = []
    for stage in space.stages:
        layer_counts = set(_choices(stage, "layers"))
        firsts: set[tuple[int, int, int]] = set()
        new: set[State] = set()
        for size, cin, prev in states:
            for f in ((prev,) if stage.shares_filters else _choices(stage, "filters")):
                if 0 in layer_counts:
                    new.add((size, cin, f))
                if max(layer_counts) >= 1:
                    firsts.add((size, cin, f))
                    new.add((conv_output_size(size, stage.stride), f, f))
        # Later layers of a stage keep the shape: (size after the first layer, filters).
        rests = {(conv_output_size(s, stage.stride), f) for s, _, f in firsts}
        stages.append(StageReach(stage, tuple(sorted({s for s, _, _ in states})),
                                 tuple(sorted({c for _, c, _ in states})),
                                 tuple(sorted({f for *_, f in new})), frozenset(firsts),
                                 frozenset(rests if max(layer_counts) >= 2 else ())))
        states = new
    return SpaceReach(tuple(stages), space.head_width, num_classes,
                      frozenset((size, cin) for size, cin, _ in states))
