"""LA-MCTS's learned partition (Wang, Fonseca & Tian, NeurIPS 2020), implemented from the paper.

A node holding more than `leaf_size` observations is split in two: KMeans(2) on (x, f(x))
separates good from bad samples, then an SVM on x alone learns the boundary, so the boundary
can be applied to unevaluated pool members. The SVM's predictions re-assign the node's samples
to its children. Selection descends from the root taking the child with the larger UCB
(mean value + 2 Cp sqrt(2 ln n_parent / n_child)) until it reaches a leaf.

The tree is rebuilt from all observations at every propose. Only the nodes on the UCB path are
ever needed to select a leaf, so only those are split: the result is the same as building the
whole tree first, at O(depth) instead of O(leaves) splits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.svm import SVC, LinearSVC

from gpunet.search.searchers.base import require_ints

GOOD, BAD = 1, 0


@dataclass(frozen=True)
class PartitionSettings:
    """Knobs of the partition (see conf/searcher/lamcts_bo.yaml)."""

    leaf_size: int = 20
    cp: float = 0.1
    value_weight: float = 1.0
    svm_kernel: str = "linear"
    svm_c: float = 1.0
    svm_gamma: str | float = "scale"
    max_scan: int = 200_000

    def __post_init__(self) -> None:
        require_ints(self, {"leaf_size": 2, "max_scan": 1})
        for field in ("cp", "value_weight"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} is {getattr(self, field)}; it must be >= 0")
        if self.svm_c <= 0:
            raise ValueError(f"svm_c is {self.svm_c}; it must be > 0")
        kernels = ("linear", "poly", "rbf", "sigmoid")
        if self.svm_kernel not in kernels:
            raise ValueError(f"svm_kernel is {self.svm_kernel!r}; choose one of {kernels}")
        gamma = self.svm_gamma
        if not (gamma in ("scale", "auto") or (isinstance(gamma, int | float) and gamma > 0)):
            raise ValueError(f"svm_gamma is {self.svm_gamma!r}; use 'scale', 'auto' or a number > 0")


@dataclass(frozen=True)
class Step:
    """One decision on the UCB path: the node's SVM and the side (GOOD or BAD) taken."""

    svm: SVC | LinearSVC
    side: int
    n_node: int
    n_chosen: int


def make_svm(settings: PartitionSettings, seed: int) -> SVC | LinearSVC:
    """The boundary classifier; linear uses liblinear, whose predict is one matrix product
    (libsvm's linear SVC predicts through its support vectors, ~100x slower over a pool).
    liblinear's dual solver (which sklearn picks for a node with fewer samples than digits)
    shuffles with `random_state`: seeded, else it would draw from numpy's global generator and
    a resumed search (a new process) could split differently."""
    if settings.svm_kernel == "linear":
        return LinearSVC(C=settings.svm_c, random_state=seed)
    return SVC(kernel=settings.svm_kernel, C=settings.svm_c, gamma=settings.svm_gamma)


def split(
    x: np.ndarray, y: np.ndarray, settings: PartitionSettings, seed: int
) -> tuple[SVC | LinearSVC, np.ndarray] | None:
    """Split one node's samples: (SVM, predicted sides), or None when no split is possible.

    No split when the node is small, its values are all equal (nothing to separate), KMeans
    finds a single cluster, or the SVM puts every sample on one side.
    """
    if y.size <= settings.leaf_size or np.ptp(y) == 0:
        return None
    z = (y - y.mean()) / y.std()
    # Scaled by sqrt(D) so that, at value_weight 1, f(x) outweighs differences spread over the D
    # digits: the two clusters are good and bad samples, as LA-MCTS intends.
    features = np.column_stack([x, settings.value_weight * np.sqrt(x.shape[1]) * z])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate points make KMeans warn; handled below
        labels = KMeans(n_clusters=2, n_init=3, random_state=seed).fit_predict(features)
    if labels.min() == labels.max():
        return None
    good_label = int(y[labels == 1].mean() > y[labels == 0].mean())
    target = (labels == good_label).astype(int)
    svm = make_svm(settings, seed).fit(x, target)
    sides = svm.predict(x)
    if sides.min() == sides.max():
        return None
    return svm, sides


def ucb(mean: float, n_parent: int, n_child: int, cp: float) -> float:
    """LA-MCTS's UCB score of a child; values are assumed scaled to [0, 1]."""
    return mean + 2.0 * cp * np.sqrt(2.0 * np.log(n_parent) / n_child)


def select_path(x: np.ndarray, y: np.ndarray, settings: PartitionSettings, seed: int) -> list[Step]:
    """Descend the partition of (x, y) from the root by UCB; the steps taken, root first.

    `y` must be scaled to [0, 1] so that `cp` is a fraction of the observed value range.
    """
    path: list[Step] = []
    members = np.arange(y.size)
    while (result := split(x[members], y[members], settings, seed + len(path))) is not None:
        svm, sides = result
        children = {s: members[sides == s] for s in (GOOD, BAD)}
        scores = {s: ucb(y[m].mean(), members.size, m.size, settings.cp) for s, m in children.items()}
        side = GOOD if scores[GOOD] >= scores[BAD] else BAD
        path.append(Step(svm, side, members.size, children[side].size))
        members = children[side]
    return path


def depth_reached(path: list[Step], x: np.ndarray) -> np.ndarray:
    """For each row of x, how many consecutive steps of `path` it satisfies (0..len(path)).

    Rows with depth == len(path) lie in the selected leaf's region; each SVM is only applied
    to the rows that passed every SVM above it.
    """
    depth = np.zeros(x.shape[0], dtype=np.int64)
    alive = np.arange(x.shape[0])
    for level, step in enumerate(path):
        if alive.size == 0:
            break
        alive = alive[step.svm.predict(x[alive]) == step.side]
        depth[alive] = level + 1
    return depth
