"""External baselines (tpe, regularized_evolution, local_search): their proposal rules on tiny
pools, and the pool contract (never a row twice, never an unavailable row, replay-exact)."""

import itertools

import numpy as np
import pytest

from gpunet.search.searchers import make_searcher
from gpunet.search.searchers.local_search import LocalSearchSearcher
from gpunet.search.searchers.neighbours import PoolNeighbours
from gpunet.search.searchers.regularized_evolution import RegularizedEvolutionSearcher

BASELINES = {
    "tpe": {},
    "regularized_evolution": {"population_size": 4, "sample_size": 2},
    "local_search": {"n_init": 3},
}


def full_pool(card: tuple[int, ...]) -> np.ndarray:
    return np.array(list(itertools.product(*[range(c) for c in card])), dtype=np.int16)


def value(pool: np.ndarray) -> np.ndarray:
    """A landscape with one peak: the digit sum."""
    return pool.sum(axis=1).astype(float)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int((a != b).sum())


@pytest.mark.parametrize("q", [1, 3])
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_never_proposes_a_row_twice_or_an_unavailable_row(name: str, q: int) -> None:
    card = np.array([3, 2, 3])
    pool = full_pool(tuple(card))[:-2]  # two encodings missing from the pool
    searcher = make_searcher({"name": name, **BASELINES[name]}, pool, card, seed=1)
    searcher.mark_failed(np.array([0]))
    searcher.mark_pending(np.array([5]))
    seen: set[int] = {0, 5}
    while searcher.n_remaining:
        idx = searcher.propose(q)
        assert 0 < idx.size <= q and len(set(idx.tolist())) == idx.size
        assert not seen & set(idx.tolist())
        seen |= set(idx.tolist())
        searcher.observe(idx, value(pool[idx]))
    assert seen == set(range(len(pool)))


@pytest.mark.parametrize("q", [1, 4])
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_a_rebuilt_searcher_proposes_the_same_batch(name: str, q: int) -> None:
    card = np.array([3, 3, 2, 3])
    pool = full_pool(tuple(card))
    cfg = {"name": name, **BASELINES[name]}
    searcher = make_searcher(cfg, pool, card, seed=3)
    for _ in range(6):
        idx = searcher.propose(q)
        searcher.observe(idx, value(pool[idx]) + np.random.default_rng(int(idx[0])).normal(size=idx.size))
    pending = searcher.propose(q)
    replayed = make_searcher(cfg, pool, card, seed=3)
    for i, v in searcher._history:
        replayed.observe(np.array([i]), np.array([v]))
    replayed.mark_pending(pending)
    np.testing.assert_array_equal(searcher.propose(q), replayed.propose(q))


def test_pool_neighbours_are_the_one_digit_changes_inside_the_pool() -> None:
    card = np.array([2, 3])
    pool = full_pool((2, 3))
    keep = np.array([0, 1, 2, 3, 5])  # (1, 1) is missing
    rows, digits = PoolNeighbours(pool[keep], card).of(0)  # (0, 0)
    assert sorted(map(tuple, pool[keep][rows].tolist())) == [(0, 1), (0, 2), (1, 0)]
    assert {tuple(pool[keep][r].tolist()): d for r, d in zip(rows, digits, strict=True)}[(1, 0)] == 0


# ---- regularized evolution --------------------------------------------------------------------
def test_regularized_evolution_child_is_a_free_hamming_1_pool_neighbour_of_the_winner() -> None:
    card = np.array([3, 3, 3])
    pool = full_pool((3, 3, 3))
    searcher = RegularizedEvolutionSearcher(pool, card, seed=0, population_size=1, sample_size=1)
    searcher.observe(np.array([13]), np.array([1.0]))  # (1, 1, 1): the whole population
    children = set()
    while True:
        idx = searcher.propose(1)
        if searcher.diagnostics.get("random_children"):
            break
        assert hamming(pool[idx[0]], pool[13]) == 1
        children.add(int(idx[0]))
        searcher.mark_pending(idx)  # blocked, but the population stays (1, 1, 1)
    assert len(children) == 6  # every neighbour once, then a random child (none left)


def test_regularized_evolution_mutation_follows_the_published_digit_then_value_draw() -> None:
    """Digit uniform, then a new value uniform: with cardinalities (2, 5) a child of (0, 0)
    changes digit 0 half the time (1 neighbour) and digit 1 half the time (4 neighbours)."""
    card = np.array([2, 5])
    pool = full_pool((2, 5))
    digit0 = 0
    for seed in range(400):
        searcher = RegularizedEvolutionSearcher(pool, card, seed=seed, population_size=1, sample_size=1)
        searcher.observe(np.array([0]), np.array([1.0]))
        digit0 += int(pool[searcher.propose(1)[0], 0] == 1)
    assert 160 < digit0 < 240  # uniform over the 5 neighbours would give about 80


def test_regularized_evolution_tournament_draws_with_replacement_and_takes_the_best() -> None:
    card = np.array([3, 3, 3])
    pool = full_pool((3, 3, 3))
    good, bad = 0, len(pool) - 1  # (0, 0, 0) and (2, 2, 2): no common neighbour
    from_good = []
    for seed in range(200):
        s = RegularizedEvolutionSearcher(pool, card, seed=seed, population_size=2, sample_size=2)
        s.observe(np.array([good, bad]), np.array([5.0, 1.0]))
        from_good.append(hamming(pool[s.propose(1)[0]], pool[good]) == 1)
    # the bad parent wins only when both draws hit it: 1/4 with replacement, never without
    assert 0.65 < np.mean(from_good) < 0.85


# ---- local search -----------------------------------------------------------------------------
def test_local_search_walks_neighbourhoods_moves_to_the_best_and_restarts_at_the_optimum() -> None:
    card = np.array([3, 3])
    pool = full_pool((3, 3))
    searcher = LocalSearchSearcher(pool, card, seed=0, n_init=1)
    start = searcher.propose(1)
    searcher.observe(start, value(pool[start]))
    centre = int(start[0])
    assert searcher.centre() == centre
    while pool[centre].sum() < 4:  # climb to the peak (2, 2)
        sweep = []
        while searcher.centre() == centre:
            idx = searcher.propose(1)
            assert searcher.diagnostics["mode"] == "neighbours"
            assert hamming(pool[idx[0]], pool[centre]) == 1
            sweep.append(int(idx[0]))
            searcher.observe(idx, value(pool[idx]))
        evaluated = set(searcher.observed()[0].tolist())
        assert set(searcher.neighbours.of(centre)[0].tolist()) <= evaluated  # the full neighbourhood
        centre = max(sweep, key=lambda i: value(pool[[i]])[0])
        assert searcher.centre() == centre
    while searcher.centre() is not None:  # the peak's remaining neighbours, then a restart
        idx = searcher.propose(1)
        searcher.observe(idx, value(pool[idx]))
    searcher.propose(1)
    assert searcher.diagnostics["mode"] == "random-start"


def test_local_search_first_improvement_moves_at_once() -> None:
    card = np.array([3, 3])
    pool = full_pool((3, 3))
    searcher = LocalSearchSearcher(pool, card, seed=0, n_init=1, full_neighbourhood=False)
    searcher.observe(np.array([4]), np.array([1.0]))  # (1, 1)
    idx = searcher.propose(1)
    searcher.observe(idx, np.array([2.0]))  # better: the centre moves to it
    assert searcher.centre() == int(idx[0])


def test_local_search_batch_fills_with_random_rows_only_when_the_neighbourhood_runs_out() -> None:
    card = np.array([3, 3])
    pool = full_pool((3, 3))
    searcher = LocalSearchSearcher(pool, card, seed=0, n_init=1)
    searcher.observe(np.array([4]), np.array([1.0]))  # centre (1, 1): 4 neighbours
    idx = searcher.propose(6)
    assert sum(hamming(pool[i], pool[4]) == 1 for i in idx) == 4
    assert searcher.diagnostics["random_fill"] == 2


# ---- tpe --------------------------------------------------------------------------------------
def test_tpe_samples_map_to_themselves_when_free_and_to_the_nearest_free_row_otherwise() -> None:
    card = np.array([2, 2, 2, 2])
    pool = full_pool((2, 2, 2, 2))
    searcher = make_searcher("tpe", pool, card, seed=0)
    idx = searcher.propose(1)
    assert searcher.diagnostics["mean_distance"] == 0.0  # the whole space is free: TPE's own sample
    last = 7
    others = np.setdiff1d(np.arange(len(pool)), [last])
    searcher.observe(others, value(pool[others]))
    assert searcher.propose(1).tolist() == [last]  # the only free row, whatever TPE sampled
    assert idx.size == 1


def test_tpe_learns_from_the_rows_evaluated() -> None:
    """After its 10 random start-up trials, default TPE concentrates on the good digits."""
    card = np.array([3] * 6)
    pool = full_pool(tuple(card))
    finals = []
    for seed in range(3):
        searcher = make_searcher("tpe", pool, card, seed=seed)
        while searcher.n_observed < 40:
            idx = searcher.propose(1)
            searcher.observe(idx, value(pool[idx]))
        late = searcher.observed()[1][20:]
        finals.append(late.mean())
    assert np.mean(finals) > value(pool).mean() + 2  # random would average 6
