"""The search space as a typed object, loaded from `conf/search_space/*.yaml`.

The YAML is the interface (an ablation swaps the file); this module only reads it, checks it and
derives the digit layout of the encoding from it, so the encoding never needs its own copy of
Table 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gpunet.errors import ConfigError, NotFoundError
from gpunet.paths import CONF_DIR

BLOCKS = ("conv", "fused_irb", "irb")
ACTIVATIONS = ("relu", "swish")
# Table 2's order of a stage's digits.
FIELD_ORDER = ("filters", "kernel", "expansion", "se", "act", "layers")
SHARED = "shared"



@dataclass(frozen=True)
class Field:
    """One hyper-parameter of a stage: either fixed (one value, no digit) or searched (a digit)."""

    name: str
    choices: tuple[Any, ...]
    searched: bool

    @property
    def fixed_value(self) -> Any:
        return self.choices[0]


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage (one row of Table 1)."""

    index: int
    block: str
    stride: int
    fields: Mapping[str, Field]  # every name of FIELD_ORDER; `filters` absent when shared
    shares_filters: bool = False

    def searched_fields(self) -> list[Field]:
        return [self.fields[n] for n in FIELD_ORDER if n in self.fields and self.fields[n].searched]


@dataclass(frozen=True)
class Digit:
    """One position of the encoding: which stage/field it sets and what its values mean."""

    position: int
    stage: int | None  # None for the resolution
    field: str
    choices: tuple[Any, ...]

    @property
    def meaning(self) -> str:
        return "resolution" if self.stage is None else f"stage {self.stage} {self.field}"


@dataclass(frozen=True)
class SearchSpace:
    name: str
    resolutions: tuple[int, ...]
    head_width: int
    stages: tuple[StageSpace, ...]

    @property
    def digits(self) -> tuple[Digit, ...]:
        digits = [Digit(0, None, "resolution", self.resolutions)]
        for stage in self.stages:
            for f in stage.searched_fields():
                digits.append(Digit(len(digits), stage.index, f.name, f.choices))
        return tuple(digits)

    @property
    def length(self) -> int:
        return len(self.digits)

    @property
    def cardinalities(self) -> np.ndarray:
        """Number of choices of every digit, shape (length,)."""
        return np.array([len(d.choices) for d in self.digits], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """A plain description, stable across runs (used to key caches)."""
        return {
            "name": self.name,
            "resolutions": list(self.resolutions),
            "head_width": self.head_width,
            "stages": [
                {"block": s.block, "stride": s.stride, "shares_filters": s.shares_filters,
                 **{n: {"choices": list(f.choices), "searched": f.searched}
                    for n, f in s.fields.items()}}
                for s in self.stages
            ],
        }


def _expand(value: Any, where: str) -> tuple[tuple[Any, ...], bool]:
    """A YAML value -> (choices, searched)."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"min", "max", "step"}
        if unknown or "min" not in value or "max" not in value:
            raise ConfigError(f"{where}: a range needs keys min, max (and optional step), got {dict(value)}")
        lo, hi, step = int(value["min"]), int(value["max"]), int(value.get("step", 1))
        if step <= 0 or hi < lo:
            raise ConfigError(f"{where}: empty range min={lo} max={hi} step={step}")
        return tuple(range(lo, hi + 1, step)), True
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0:
            raise ConfigError(f"{where}: an empty list of choices")
        return tuple(value), True
    return (value,), False


def _check_values(stage: int, name: str, choices: tuple[Any, ...]) -> None:
    where = f"search space stage {stage} {name}"
    if name == "act":
        bad = [c for c in choices if c not in ACTIVATIONS]
        if bad:
            raise ConfigError(f"{where}: unknown activation(s) {bad}; allowed {list(ACTIVATIONS)}")
    elif name == "se":
        if any(not isinstance(c, bool) for c in choices):
            raise ConfigError(f"{where}: se choices must be true/false, got {list(choices)}")
    elif name in ("filters", "kernel", "layers"):
        if any(not isinstance(c, int) or isinstance(c, bool) for c in choices):
            raise ConfigError(f"{where}: must be integers, got {list(choices)}")
        low = 0 if name == "layers" else 1
        if min(choices) < low:
            raise ConfigError(f"{where}: values must be >= {low}, got {list(choices)}")
        if name == "kernel" and any(c % 2 == 0 for c in choices):
            raise ConfigError(f"{where}: kernels must be odd, got {list(choices)}")
    elif name == "expansion" and min(float(c) for c in choices) <= 0:
        raise ConfigError(f"{where}: expansions must be > 0, got {list(choices)}")


def _stage_from_config(index: int, raw: Mapping[str, Any]) -> StageSpace:
    block = raw.get("block")
    if block not in BLOCKS:
        raise ConfigError(f"search space stage {index}: block {block!r} is not one of {list(BLOCKS)}")
    stride = raw.get("stride")
    if stride not in (1, 2):
        raise ConfigError(f"search space stage {index}: stride must be 1 or 2, got {stride!r}")
    allowed = set(FIELD_ORDER) | {"block", "stride"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"search space stage {index}: unknown key(s) {sorted(unknown)}; "
                          f"allowed {sorted(allowed)}")
    defaults = {"expansion": 1, "se": False} if block == "conv" else {}
    fields: dict[str, Field] = {}
    shares = raw.get("filters") == SHARED
    if shares and index == 0:
        raise ConfigError("search space stage 0: filters cannot be 'shared' (no previous stage)")
    for name in FIELD_ORDER:
        if name == "filters" and shares:
            continue
        if name not in raw and name not in defaults:
            raise ConfigError(f"search space stage {index}: missing key {name!r}")
        choices, searched = _expand(raw.get(name, defaults.get(name)), f"stage {index} {name}")
        _check_values(index, name, choices)
        fields[name] = Field(name, choices, searched)
    if block == "conv" and (fields["expansion"].choices != (1,) or fields["se"].choices != (False,)):
        raise ConfigError(f"search space stage {index}: a conv stage has no expansion or SE")
    return StageSpace(index, block, int(stride), fields, shares)


def space_from_config(cfg: Mapping[str, Any] | DictConfig) -> SearchSpace:
    """Build and check a SearchSpace from a (Hydra) mapping."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    for key in ("name", "resolutions", "head_width", "stages"):
        if key not in cfg:
            raise ConfigError(f"search space config is missing {key!r}")
    resolutions, _ = _expand(cfg["resolutions"], "resolutions")
    if any(not isinstance(r, int) or r < 32 for r in resolutions):
        raise ConfigError(f"search space resolutions must be integers >= 32, got {list(resolutions)}")
    stages = tuple(_stage_from_config(i, s) for i, s in enumerate(cfg["stages"]))
    if not stages or stages[0].fields["layers"].choices != (1,):
        raise ConfigError("search space stage 0 is the stem: it needs exactly `layers: 1`")
    return SearchSpace(str(cfg["name"]), tuple(int(r) for r in resolutions),
                       int(cfg["head_width"]), stages)


def load_space(name_or_path: str | Path = "gpunet") -> SearchSpace:
    """Load `conf/search_space/<name>.yaml` (or a YAML path)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONF_DIR / "search_space" / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "search_space").glob("*.yaml"))
        raise NotFoundError(f"search space {name_or_path!r} not found at {path}; known: {known}")
    return space_from_config(OmegaConf.load(path))
