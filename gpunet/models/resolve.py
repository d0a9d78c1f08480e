"""Turn whatever a user passes as `arch=` into a NetworkSpec."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpunet.errors import ConfigError
from gpunet.models.registry import HUB_SPECS
from gpunet.space.encoding import encoding_to_spec
from gpunet.space.formats import load_spec
from gpunet.space.search_space import SearchSpace, load_space
from gpunet.space.spec import NetworkSpec


def resolve_spec(arch: Any, space: SearchSpace | None = None) -> NetworkSpec:
    """`arch` is a hub model name (gpunet_1), a path to a spec JSON (ours or NVIDIA's), an
    encoding of `space` (a sequence of ints or a string such as "2,0,1,..."), or a NetworkSpec."""
    if isinstance(arch, NetworkSpec):
        return arch
    if isinstance(arch, str):
        text = arch.strip()
        if text in HUB_SPECS:
            return HUB_SPECS[text]()
        if text.endswith(".json"):
            return load_spec(Path(text))
        if re.fullmatch(r"[\[\(]?\s*-?\d+(\s*[, ]\s*-?\d+)*\s*[\]\)]?", text):
            arch = [int(x) for x in re.findall(r"-?\d+", text)]
        else:
            raise ConfigError(f"arch={arch!r} is neither a hub model ({sorted(HUB_SPECS)}), a "
                              "path to a .json spec, nor an encoding such as '2,0,1,...'")
    if isinstance(arch, Sequence) or hasattr(arch, "__len__"):
        return encoding_to_spec(space or load_space(), list(arch))
    raise ConfigError(f"cannot read arch={arch!r} as a network")
