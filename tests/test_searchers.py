"""Searchers: the ask/tell contract, determinism on replay, degenerate inputs, configs, LA-MCTS."""


import numpy as np
import pytest
import torch

from gpunet.search.searchers import SEARCHERS, make_searcher
from gpunet.search.searchers import bo as bo_module
from gpunet.search.searchers.base import Searcher
from gpunet.search.searchers.evolution import EvolutionSettings
from gpunet.search.searchers.gp import GPSettings, build_gp, cap_training_set
from gpunet.search.searchers.lamcts import LAMCTSSearcher
from gpunet.search.searchers.local_search import LocalSearchSettings
from gpunet.search.searchers.partition import (
    BAD,
    GOOD,
    PartitionSettings,
    Step,
    depth_reached,
    select_path,
    split,
    ucb,
)

CARD = np.array([4, 2, 5, 3, 2, 6])
# Small, cheap settings so that the real BoTorch/sklearn code runs in milliseconds.
FAST = {
    "random": {},
    "bo": {"n_init": 6, "max_train": 24, "fit_maxiter": 5, "screened_per_row": 64, "n_candidates": 64,
           "mc_samples": 16},
    "lamcts_bo": {
        "n_init": 6,
        "max_train": 24,
        "fit_maxiter": 5,
        "screened_per_row": 64,
        "n_candidates": 64,
        "mc_samples": 16,
        "leaf_size": 5,
    },
    "evolution": {"population_size": 8, "sample_size": 3},
}
NAMES = sorted(FAST)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grid_pool(card: np.ndarray = CARD) -> np.ndarray:
    """Every encoding of a small space, shuffled, as int16 (like a real pool)."""
    axes = np.meshgrid(*[np.arange(c) for c in card], indexing="ij")
    pool = np.stack(axes, -1).reshape(-1, len(card)).astype(np.int16)
    return pool[np.random.default_rng(0).permutation(len(pool))]


def smooth(pool: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """A value with one maximum, at the top corner of the space."""
    return -((pool[idx] / (CARD - 1) - 1.0) ** 2).sum(axis=1)


def build(name: str, pool: np.ndarray | None = None, seed: int = 0) -> Searcher:
    return make_searcher({"name": name, **FAST[name]}, grid_pool() if pool is None else pool, CARD, seed)


def run(searcher: Searcher, n: int, q: int, value=smooth) -> None:
    while searcher.n_observed < n:
        idx = searcher.propose(q)
        searcher.observe(idx, value(searcher.pool, idx))


# ---- the ask/tell contract ------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_proposals_are_distinct_fresh_and_exhaust_the_pool(name: str) -> None:
    pool = grid_pool()[:40]
    searcher = build(name, pool)
    seen: list[int] = []
    failed = searcher.propose(3)
    searcher.mark_failed(failed)
    while (idx := searcher.propose(7)).size:
        assert idx.dtype == np.int64
        assert len(set(idx.tolist())) == idx.size
        assert not set(idx.tolist()) & (set(seen) | set(failed.tolist()))
        assert idx.size == min(7, 40 - 3 - len(seen))
        seen += idx.tolist()
        searcher.observe(idx, smooth(pool, idx))
    assert sorted(seen + failed.tolist()) == list(range(40))
    assert searcher.n_remaining == 0
    assert searcher.propose(4).size == 0
    assert searcher.propose(4).dtype == np.int64


@pytest.mark.parametrize("name", NAMES)
def test_pending_proposals_are_not_proposed_again(name: str) -> None:
    searcher = build(name)
    run(searcher, 16, 4)
    first, second = searcher.propose(5), searcher.propose(5)
    assert not set(first.tolist()) & set(second.tolist())
    assert searcher.n_pending == 10


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("q", [1, 4])
def test_a_rebuilt_searcher_proposes_the_same_next_batch(name: str, q: int) -> None:
    original = build(name, seed=3)
    run(original, 27, q)  # not a multiple of refit_every: reused hyper-parameters are replayed
    replay = build(name, seed=3)
    for i, v in original._history:
        replay.observe([i], [v])
    np.testing.assert_array_equal(original.propose(q), replay.propose(q))


@pytest.mark.parametrize("name", NAMES)
def test_the_seed_changes_the_proposals(name: str) -> None:
    a, b = build(name, seed=0), build(name, seed=1)
    run(a, 24, 4)
    for i, v in a._history:
        b.observe([i], [v])
    assert not np.array_equal(a.propose(4), b.propose(4))


@pytest.mark.parametrize("name", ["bo", "lamcts_bo"])
def test_gp_searchers_use_the_gp_after_n_init(name: str) -> None:
    searcher = build(name)
    searcher.propose(2)
    assert searcher.diagnostics["mode"] == "random-init"
    run(searcher, 12, 4)
    searcher.propose(4)
    assert searcher.diagnostics["mode"] == "gp"


def test_the_screen_passes_the_best_of_many_candidates_to_the_joint_step() -> None:
    # 8 candidates for qLogNEI after 20 values of a one-peak function: screened from the whole
    # pool by the GP's analytic log-EI, the proposal of every seed lies in the pool's top 10%;
    # drawn at random (no screen), some do not (the control: the claim can fail)
    pool = grid_pool()
    top = np.quantile(smooth(pool, np.arange(len(pool))), 0.90)

    def in_top(screened_per_row: int) -> list[bool]:
        hits = []
        for seed in range(5):
            searcher = make_searcher({"name": "bo", **FAST["bo"], "n_candidates": 8,
                                      "screened_per_row": screened_per_row}, pool, CARD, seed)
            run(searcher, 20, 4)
            hits.append(bool(smooth(pool, searcher.propose(1))[0] >= top))
            assert searcher.diagnostics["n_candidates"] == 8
        return hits

    assert all(in_top(len(pool)))  # q = 1: the whole pool
    assert not all(in_top(0))


def test_no_screen_draws_n_candidates_at_random_as_before_the_screen_existed() -> None:
    # screened_per_row 0 (identity.ADDED_SINCE resumes searches journaled before the screen with
    # it), or q x screened_per_row <= n_candidates: no screen, exactly n_candidates random rows
    batches = []
    for per_row in (0, 21):
        searcher = make_searcher({"name": "bo", **FAST["bo"], "screened_per_row": per_row},
                                 grid_pool(), CARD, 2)
        run(searcher, 14, 2)
        batches.append(searcher.propose(3))
        assert searcher.diagnostics["n_screened"] == searcher.diagnostics["n_candidates"] == 64
    np.testing.assert_array_equal(*batches)


@pytest.mark.parametrize("name", ["bo", "lamcts_bo"])
def test_hyperparameters_are_refitted_every_refit_every_observations(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted_at: list[int] = []
    original = bo_module.fit_hyperparameters

    def spy(x, y, maxiter, seed, kernel):
        fitted_at.append(len(y))
        return original(x, y, maxiter, seed, kernel)

    monkeypatch.setattr(bo_module, "fit_hyperparameters", spy)
    searcher = make_searcher({"name": name, **FAST[name], "refit_every": 4}, grid_pool(), CARD)
    run(searcher, 6, 3)  # n_init = 6 values, then one observation at a time
    run(searcher, 15, 1)
    # proposals at 6..14 observations: the refit point 4 has too few values, so 6 and 7 fit on
    # their own history; from 8 on, only the multiples of 4 fit
    assert fitted_at == [6, 7, 8, 12]


@pytest.mark.parametrize("name", ["bo", "lamcts_bo", "evolution"])
def test_model_based_searchers_beat_random_on_a_smooth_objective(name: str) -> None:
    pool = grid_pool()
    top = np.sort(smooth(pool, np.arange(len(pool))))[-10]
    wins = 0
    for seed in range(3):
        searcher, baseline = build(name, pool, seed), build("random", pool, seed)
        run(searcher, 40, 4)
        run(baseline, 40, 4)
        wins += searcher.best_value > baseline.best_value
        if name != "evolution":
            assert searcher.best_value >= top  # within the pool's top 10 of 1440
    assert wins >= 2


# ---- degenerate inputs ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_all_equal_values_fall_back_to_random_choice(name: str) -> None:
    searcher = build(name)
    run(searcher, 24, 4, value=lambda pool, idx: np.ones(len(idx)))
    idx = searcher.propose(4)
    assert idx.size == 4 and len(set(idx.tolist())) == 4
    if name in ("bo", "lamcts_bo"):
        assert searcher.diagnostics["mode"] == "random-flat"
    assert searcher.best_value == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_values_are_failures(name: str) -> None:
    searcher = build(name)
    idx = searcher.propose(4)
    searcher.observe(idx, [np.nan, np.inf, -np.inf, 2.0])
    assert searcher.n_failed == 3
    assert searcher.best_value == 2.0 and searcher.best_index == idx[3]
    run(searcher, 30, 4)
    assert searcher.best_value > -np.inf
    proposed = searcher.propose(1000)
    assert not set(idx.tolist()) & set(proposed.tolist())


@pytest.mark.parametrize("name", NAMES)
def test_only_failures_leave_no_best(name: str) -> None:
    searcher = build(name)
    run(searcher, 12, 4, value=lambda pool, idx: np.full(len(idx), np.nan))
    assert searcher.best_value == -np.inf and searcher.best_index is None
    assert searcher.propose(4).size == 4


@pytest.mark.parametrize("name", NAMES)
def test_a_pool_smaller_than_q_is_proposed_whole(name: str) -> None:
    pool = grid_pool()[:5]
    searcher = build(name, pool)
    assert sorted(searcher.propose(8).tolist()) == [0, 1, 2, 3, 4]
    assert searcher.propose(8).size == 0
    assert build(name, grid_pool()[:0]).propose(8).size == 0  # an empty pool, too


def test_duplicate_observations_are_averaged() -> None:
    searcher = build("random")
    searcher.observe([7, 7, 3], [1.0, 3.0, 1.5])
    searcher.observe([7], [np.nan])  # a failed repeat does not erase the values
    idx, mean = searcher.observed()
    assert dict(zip(idx.tolist(), mean.tolist(), strict=True)) == {7: 2.0, 3: 1.5}
    assert searcher.n_observed == 4
    assert searcher.best_index == 7 and searcher.best_value == 2.0
    assert 7 not in searcher.propose(10_000).tolist()


def test_an_observed_index_that_was_never_proposed_is_accepted() -> None:
    searcher = build("bo")
    searcher.observe(np.array([5], dtype=np.int32), np.array([0.5], dtype=np.float32))
    assert searcher.n_observed == 1 and 5 not in searcher.propose(10_000).tolist()


def test_duplicate_encodings_in_the_pool_are_handled() -> None:
    pool = np.repeat(grid_pool()[:3], 10, axis=0)  # 3 distinct encodings, 10 copies each
    searcher = build("bo", pool)
    run(searcher, 12, 4)
    idx = searcher.propose(4)
    assert idx.size == 4 and len(set(idx.tolist())) == 4


class _NeverGood:
    """A boundary that puts every row on the BAD side: the GOOD region is empty."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), dtype=int)


def test_an_empty_region_falls_back_to_the_deepest_region_with_q_members() -> None:
    searcher: LAMCTSSearcher = build("lamcts_bo")
    available = np.arange(len(searcher.pool))
    rng = np.random.default_rng(0)
    empty = [Step(_NeverGood(), GOOD, 10, 5)]
    members = searcher._region(empty, available, 4, rng)
    assert searcher.diagnostics["level_used"] == 0
    assert searcher.diagnostics["region_fraction"] == 0.0
    assert members.size == searcher.diagnostics["scanned"] >= 4
    # one good step, then an empty one: the first step's region is used
    half = [Step(_NeverGood(), BAD, 10, 5), Step(_NeverGood(), GOOD, 5, 2)]
    members = searcher._region(half, available, 4, rng)
    assert searcher.diagnostics["level_used"] == 1 and members.size >= 4


# ---- the partition --------------------------------------------------------------------------
def test_split_separates_good_from_bad_by_a_boundary_on_x() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((60, 4))
    y = (x[:, 0] > 0.5).astype(float) + 0.01 * rng.random(60)
    svm, sides = split(x, y, PartitionSettings(leaf_size=10), seed=0)
    assert y[sides == GOOD].mean() > y[sides == BAD].mean() + 0.8
    probe = np.array([[0.9, 0.5, 0.5, 0.5], [0.1, 0.5, 0.5, 0.5]])
    assert svm.predict(probe).tolist() == [GOOD, BAD]


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_no_split_for_small_or_flat_nodes(kernel: str) -> None:
    settings = PartitionSettings(leaf_size=10, svm_kernel=kernel)
    x = np.random.default_rng(0).random((30, 3))
    assert split(x[:10], x[:10, 0], settings, seed=0) is None  # not more than leaf_size
    assert split(x, np.ones(30), settings, seed=0) is None  # nothing to separate
    assert split(np.ones((30, 3)), x[:, 0], settings, seed=0) is None  # one cluster in x


def test_ucb_prefers_value_and_rewards_exploration() -> None:
    assert ucb(0.8, 100, 50, cp=0.1) > ucb(0.5, 100, 50, cp=0.1)
    assert ucb(0.5, 100, 5, cp=1.0) > ucb(0.5, 100, 50, cp=1.0)
    assert ucb(0.5, 100, 5, cp=0.0) == 0.5


def test_select_path_descends_to_a_leaf_and_regions_nest() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((200, 3))
    y = x[:, 0] * x[:, 1]
    settings = PartitionSettings(leaf_size=20, cp=0.0)
    path = select_path(x, y, settings, seed=0)
    assert len(path) >= 2
    assert all(step.side == GOOD for step in path)  # cp = 0: greedy on the mean value
    assert all(a.n_chosen == b.n_node for a, b in zip(path, path[1:], strict=False))
    assert path[-1].n_chosen <= 2 * settings.leaf_size
    depth = depth_reached(path, rng.random((5000, 3)))
    counts = [(depth >= level).sum() for level in range(len(path) + 1)]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0
    probe = rng.random((5000, 3))
    inside = probe[depth_reached(path, probe) == len(path)]
    assert (inside[:, 0] * inside[:, 1]).mean() > (probe[:, 0] * probe[:, 1]).mean()


def test_lamcts_records_its_tree_and_region() -> None:
    searcher = build("lamcts_bo")
    run(searcher, 40, 4)
    searcher.propose(4)
    d = searcher.diagnostics
    assert d["path_depth"] >= 1 and 0 <= d["level_used"] <= d["path_depth"]
    assert 0.0 < d["region_fraction"] <= 1.0


def test_cap_training_set_keeps_the_best_half() -> None:
    values = np.arange(100.0)
    keep = cap_training_set(values, 20, np.random.default_rng(0))
    assert keep.size == 20 and len(set(keep.tolist())) == 20
    assert set(range(90, 100)) <= set(keep.tolist())
    np.testing.assert_array_equal(cap_training_set(values[:10], 20, np.random.default_rng(0)), np.arange(10))


@pytest.mark.parametrize(("kernel", "same"), [("categorical", True), ("ordinal", False)])
def test_a_categorical_gp_sees_every_other_choice_of_a_digit_as_equally_far(kernel: str, same: bool) -> None:
    """The Hamming view: choice 1 and choice 3 of a digit are as unlike choice 0 as each other;
    the ordinal view puts choice 1 nearer."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(30, 6)) / 3.0
    y = rng.normal(size=30)
    model = build_gp(x, y, kernel=kernel)
    base = x[:1]
    near, far = base.copy(), base.copy()
    near[0, 0] = (base[0, 0] * 3 + 1) % 4 / 3.0
    far[0, 0] = (base[0, 0] * 3 + 2) % 4 / 3.0
    pair = torch.as_tensor(np.vstack([near, far]))
    kernel_values = model.covar_module(torch.as_tensor(base), pair).to_dense()
    assert bool(torch.isclose(kernel_values[0, 0], kernel_values[0, 1])) is same


# ---- configs and validation -----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_config_builds_with_knobs_equal_to_the_code_defaults(composed, name: str) -> None:
    cfg = composed("search", f"searcher={name}").searcher  # as composed (lamcts_bo extends bo)
    assert cfg.name == name and cfg.name in SEARCHERS
    searcher = make_searcher(cfg, grid_pool(), CARD, seed=0)
    kinds = {
        "random": [],
        "bo": [GPSettings],
        "lamcts_bo": [GPSettings, PartitionSettings],
        "evolution": [EvolutionSettings],
        "regularized_evolution": [EvolutionSettings],
        "local_search": [LocalSearchSettings],
        "tpe": [],
    }[cfg.name]
    defaults = {k: v for kind in kinds for k, v in vars(kind()).items()}
    knobs = {k: v for k, v in cfg.items() if k != "name"}
    assert knobs == defaults  # every knob documented in the file, with the code's default
    assert type(searcher) is SEARCHERS[cfg.name]
    assert make_searcher(name, grid_pool(), CARD).name == name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_searcher("smac", grid_pool(), CARD), "unknown searcher 'smac'"),
        (lambda: make_searcher({"n_init": 3}, grid_pool(), CARD), "unknown searcher None"),
        (lambda: make_searcher({"name": "bo", "leaf_size": 3}, grid_pool(), CARD), "leaf_size"),
        (lambda: make_searcher({"name": "random", "x": 1}, grid_pool(), CARD), r"knob\(s\) \['x'\]"),
        (lambda: make_searcher({"name": "bo", "n_init": 0}, grid_pool(), CARD), "n_init is 0"),
        (lambda: make_searcher({"name": "lamcts_bo", "svm_kernel": "tree"}, grid_pool(), CARD), "svm_kernel"),
        (lambda: make_searcher({"name": "lamcts_bo", "svm_gamma": "x"}, grid_pool(), CARD), "svm_gamma"),
        (lambda: make_searcher({"name": "lamcts_bo", "cp": -1}, grid_pool(), CARD), "cp is -1"),
        (lambda: make_searcher({"name": "bo", "kernel": "hamming"}, grid_pool(), CARD), "kernel is 'ham"),
        (
            lambda: make_searcher(
                {"name": "evolution", **FAST["evolution"], "sample_size": 9}, grid_pool(), CARD
            ),
            "exceeds population_size",
        ),
        (lambda: make_searcher("random", grid_pool() + 1, CARD), "digit 0 is 4, out of range; allowed 0..3"),
        (lambda: make_searcher("random", grid_pool()[:, :3], CARD), r"shape \(N, 6\)"),
        (lambda: make_searcher("random", grid_pool() * 0.5, CARD), "integer dtype"),
        (lambda: make_searcher("random", grid_pool(), CARD, seed=-1), "seed is -1"),
        (lambda: build("random").propose(-1), "q is -1"),
        (lambda: build("random").observe([1, 2], [0.5]), "2 indices but 1 values"),
        (lambda: build("random").observe([10**6], [0.5]), "index 1000000 is outside the pool"),
        (lambda: build("random").mark_failed([0.5]), "integer pool indices"),
    ],
)
def test_bad_input_is_a_clear_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_a_searcher_subclass_with_a_name_registers_itself():
    class FirstRow(Searcher):
        name = "test_first_row"

        def _select(self, q, available, rng):
            return available[:q], "model"

    try:
        searcher = make_searcher("test_first_row", grid_pool(), CARD)
        assert isinstance(searcher, FirstRow) and searcher.propose(2).tolist() == [0, 1]
        with pytest.raises(TypeError, match="'test_first_row' is taken"):
            type("Again", (Searcher,), {"name": "test_first_row"})
    finally:
        SEARCHERS.pop("test_first_row", None)


def test_a_split_does_not_depend_on_numpys_global_random_state() -> None:
    """A resumed search runs in a new process, whose global generator is seeded from the OS: a
    node with fewer samples than digits (liblinear's dual solver, which shuffles) must split by
    the searcher's seed alone."""
    rng = np.random.default_rng(0)
    x = rng.random((30, 41))
    y = x @ rng.normal(size=41) + 0.3 * rng.normal(size=30)
    boundaries = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        svm, _ = split(x, y, PartitionSettings(leaf_size=5), seed=7)
        boundaries.append(np.append(svm.coef_, svm.intercept_))
    np.testing.assert_array_equal(*boundaries)
