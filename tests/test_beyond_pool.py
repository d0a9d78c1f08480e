"""Searching the whole tier (issue 12, item 4): encodings bred beyond the pool, admitted by the
tier's test, added as rows, never proposed twice, and replayed exactly."""

import numpy as np
import pytest

from gpunet.errors import ConfigError
from gpunet.search.searchers import make_searcher
from gpunet.search.searchers.beyond_pool import MAX_DIGITS_CHANGED, RowIndex, children

CARD = np.array([4, 2, 5, 3, 2, 6, 1])  # the last digit has no choice: never mutated
FAST = {"n_init": 6, "max_train": 24, "fit_maxiter": 5, "n_candidates": 32, "mc_samples": 16,
        "n_generated": 200}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sparse_pool(n: int = 60, seed: int = 0) -> np.ndarray:
    """A small random sample of the space (like a tier pool: most encodings are not in it)."""
    pool = np.random.default_rng(seed).integers(CARD, size=(n, CARD.size))
    return np.unique(pool, axis=0).astype(np.int16)


def even(encodings: np.ndarray) -> np.ndarray:
    """A stand-in for the tier's latency test: admits half of the space."""
    return encodings.sum(axis=1) % 2 == 0


def value(encodings: np.ndarray) -> np.ndarray:
    """One maximum, at the top corner (outside the sparse pool)."""
    return -((encodings / np.maximum(CARD - 1, 1) - 1.0) ** 2).sum(axis=1)


def build(name: str, seed: int = 0, pool: np.ndarray | None = None):
    knobs = {**FAST, **({"leaf_size": 6} if name == "lamcts_bo" else {})}
    searcher = make_searcher({"name": name, **knobs}, sparse_pool() if pool is None else pool,
                             CARD, seed)
    searcher.allow_beyond_pool(even)
    return searcher


def run(searcher, n: int, q: int) -> None:
    while searcher.n_observed < n:
        rows = searcher.propose(q)
        searcher.observe(rows, value(searcher.pool[rows]))


def test_children_change_one_to_three_digits_within_the_cardinalities() -> None:
    parents = np.array([[0, 0, 0, 0, 0, 0, 0], [3, 1, 4, 2, 1, 5, 0]])
    kids = children(parents, CARD, 2000, np.random.default_rng(0))
    assert kids.shape == (2000, CARD.size)
    assert ((kids >= 0) & (kids < CARD)).all() and (kids[:, -1] == 0).all()
    changed = np.minimum((kids != parents[0]).sum(1), (kids != parents[1]).sum(1))
    assert changed.max() == MAX_DIGITS_CHANGED
    assert set(np.unique(changed)) >= {1, 2, 3}  # and some returned to the parent: 0


def test_row_index_finds_pool_rows_and_added_rows_and_misses_others() -> None:
    pool = sparse_pool(500)
    index = RowIndex(pool)
    rows = np.array([3, 0, len(pool) - 1])
    np.testing.assert_array_equal(index.find(pool[rows]), rows)
    outside = next(e for e in children(pool[:1], CARD, 100, np.random.default_rng(1))
                   if not (pool == e).all(axis=1).any())
    assert index.find(outside)[0] == -1
    index.note_added(outside, 999)
    assert index.find(outside)[0] == 999


def test_add_rows_appends_new_encodings_once_and_keeps_pool_rows() -> None:
    searcher = build("bo")
    n = searcher.n_base
    outside = np.array([[3, 1, 4, 2, 1, 5, 0], [3, 1, 4, 2, 1, 4, 0]])
    assert (searcher.find_rows(outside) == -1).all()  # the sparse pool lacks the top corner
    rows = searcher.add_rows(np.vstack([outside, outside[:1], searcher.pool[[5]]]))
    np.testing.assert_array_equal(rows, [n, n + 1, n, 5])
    assert searcher.pool.shape[0] == n + 2 and searcher.n_remaining == n + 2
    np.testing.assert_array_equal(searcher.add_rows(outside), [n, n + 1])  # idempotent
    with pytest.raises(ConfigError, match="out of range"):
        searcher.add_rows(np.array([[4, 0, 0, 0, 0, 0, 0]]))


@pytest.mark.parametrize("name", ["bo", "lamcts_bo"])
@pytest.mark.parametrize("q", [1, 4])
def test_searchers_leave_the_pool_for_admitted_new_encodings_only(name: str, q: int) -> None:
    searcher = build(name)
    run(searcher, 40, q)
    rows = np.array([i for i, _ in searcher._history])
    assert len(set(rows.tolist())) == rows.size  # never a row twice
    beyond = rows[rows >= searcher.n_base]
    assert beyond.size > 0
    assert even(searcher.pool[beyond]).all()  # only what the tier admits
    assert not (searcher.pool[beyond][:, None, :] == sparse_pool()[None]).all(-1).any()
    assert len(np.unique(searcher.pool, axis=0)) == len(searcher.pool)  # no encoding twice
    # and here the top corner lies outside the pool: leaving it pays
    assert searcher.best_value > value(sparse_pool()).max()


@pytest.mark.parametrize("name", ["bo", "lamcts_bo"])
def test_without_permission_the_pool_is_all_there_is(name: str) -> None:
    knobs = {**FAST, **({"leaf_size": 6} if name == "lamcts_bo" else {})}
    searcher = make_searcher({"name": name, **knobs}, sparse_pool(), CARD, 0)
    run(searcher, 30, 2)
    assert searcher.pool.shape[0] == searcher.n_base
    assert max(i for i, _ in searcher._history) < searcher.n_base


@pytest.mark.parametrize("name", ["bo", "lamcts_bo"])
def test_a_replayed_searcher_adds_the_same_rows_and_proposes_the_same_batch(name: str) -> None:
    original = build(name, seed=2)
    run(original, 27, 4)
    replay = build(name, seed=2)
    # as a resumed search does: rows beyond the pool added in trial order, then the history
    replay.add_rows(original.pool[original.n_base:])
    for i, v in original._history:
        replay.observe([i], [v])
    np.testing.assert_array_equal(original.propose(4), replay.propose(4))
    np.testing.assert_array_equal(original.pool, replay.pool)


def test_tpe_proposes_its_own_samples_when_the_tier_admits_them() -> None:
    pytest.importorskip("optuna")
    searcher = make_searcher("tpe", sparse_pool(), CARD, 0)
    searcher.allow_beyond_pool(even)
    run(searcher, 30, 3)
    rows = np.array([i for i, _ in searcher._history])
    assert len(set(rows.tolist())) == rows.size
    beyond = rows[rows >= searcher.n_base]
    assert beyond.size > 0 and even(searcher.pool[beyond]).all()
    assert len(np.unique(searcher.pool, axis=0)) == len(searcher.pool)


def canonical(encodings: np.ndarray) -> np.ndarray:
    """A stand-in for one encoding per network: digit 0 at 0 (an empty stage) ignores digits 1-3."""
    out = np.array(encodings, dtype=np.int64, copy=True)
    out[out[:, 0] == 0, 1:4] = 0
    return out


@pytest.mark.parametrize("name", ["bo", "lamcts_bo", "tpe"])
def test_new_encodings_are_canonical_so_no_network_is_proposed_twice(name: str) -> None:
    if name == "tpe":
        pytest.importorskip("optuna")
    pool = np.unique(canonical(sparse_pool()), axis=0).astype(np.int16)
    knobs = {**FAST, **({"leaf_size": 6} if name == "lamcts_bo" else {})} if name != "tpe" else {}
    searcher = make_searcher({"name": name, **knobs}, pool, CARD, 0)
    searcher.allow_beyond_pool(even, canonical)

    def empty_first_stage_wins(encodings):  # the maximum lies among the ignored digits' region
        return value(encodings) + 2.0 * (encodings[:, 0] == 0)

    while searcher.n_observed < 40:
        rows = searcher.propose(3)
        searcher.observe(rows, empty_first_stage_wins(searcher.pool[rows]))
    rows = np.array([i for i, _ in searcher._history])
    proposed = searcher.pool[rows]
    assert rows.size > searcher.n_base - len(pool) and (rows >= searcher.n_base).any()
    np.testing.assert_array_equal(canonical(proposed), proposed)  # every proposal canonical
    assert len(np.unique(proposed, axis=0)) == len(proposed)  # so each network once
