"""Sobol sampling of encodings (paper §3.2, Fig. 5): evenly covers the space, vectorised."""

from __future__ import annotations

import numpy as np
import torch

from gpunet.space.search_space import SearchSpace


def sobol_encodings(space: SearchSpace, n: int, seed: int = 0) -> np.ndarray:
    """`n` valid encodings, shape (n, space.length), dtype int16.

    A scrambled, seeded Sobol point u in [0, 1)^D maps to digit floor(u * cardinality), which
    spreads every digit uniformly over its choices.
    """
    if n < 0:
        raise ValueError(f"number of samples must be >= 0, got {n}")
    cards = torch.as_tensor(space.cardinalities, dtype=torch.float32)
    engine = torch.quasirandom.SobolEngine(dimension=space.length, scramble=True, seed=seed)
    u = engine.draw(n, dtype=torch.float32)
    digits = torch.floor(u * cards).clamp_(max=cards - 1)
    return digits.to(torch.int16).numpy()
