"""Split a command line into the grid of searches it asks for (ablations).

`searcher=lamcts_bo,random seed=0,1,2` is six searches: every combination of the comma-separated
or range(...) (discrete sweep) overrides, each with all the plain overrides. Interval sweeps are
refused: a grid of searches needs discrete choices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException


@dataclass(frozen=True)
class GridPoint:
    overrides: tuple[str, ...]  # every override of this search, plain ones included
    varying: tuple[str, ...]  # only the ones that differ between searches of the grid

    @property
    def label(self) -> str:
        """A shell-friendly name of this point of the grid: `searcher-random__seed-1`."""
        return "__".join(_safe(o.replace("=", "-", 1)) for o in self.varying) or "search"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-," else "_" for c in text)


def grid_label(points: list[GridPoint]) -> str:
    """A shell-friendly name of the whole grid: `searcher-lamcts_bo,random__seed-0,1`."""
    values: dict[str, list[str]] = {}
    for point in points:
        for override in point.varying:
            key, value = override.split("=", 1)
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return "__".join(_safe(f"{key}-{','.join(vals)}") for key, vals in values.items()) or "search"


def grid_points(arguments: list[str]) -> list[GridPoint]:
    parsed = OverridesParser.create().parse_overrides(arguments)
    fixed: list[str] = []
    sweeps: list[list[str]] = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise HydraException(f"the gpunet sweeper's ablation grids take discrete choices "
                                     f"(a,b,c or range(...)), not {override.input_line}")
            sweeps.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            fixed.append(f"{key}={override.get_value_element_as_str()}")
    return [GridPoint(tuple(fixed) + combo, combo) for combo in itertools.product(*sweeps)]
