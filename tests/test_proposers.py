"""Who proposed each trial (random start, model, fallback, random) and the random start scaled to
the budget (`n_init: auto`): each searcher's proposers on a tiny pool, the rule's values, the
journal and results.csv of a real search, and a rerun trial keeping its proposer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_search_e2e import journal, results, run, search_cmd
from test_searchers import CARD, FAST, grid_pool

from gpunet.search.journal import Journal, Trial
from gpunet.search.searchers import PROPOSERS, auto_n_init, make_searcher
from gpunet.search.summary import proposer_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def value(pool: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The digit sum: one peak, at the top corner of any space."""
    return pool[idx].sum(axis=1).astype(float)


def drive(searcher, pool: np.ndarray, budget: int, q: int) -> list[str]:
    """Ask/tell until `budget` evaluations; the proposer of each evaluation, in order."""
    by: list[str] = []
    while searcher.n_observed < budget:
        idx = searcher.propose(min(q, budget - searcher.n_observed))
        assert len(searcher.proposers) == idx.size and set(searcher.proposers) <= set(PROPOSERS)
        by += searcher.proposers
        searcher.observe(idx, value(pool, idx))
    return by


# ---- n_init: auto ---------------------------------------------------------------------------
@pytest.mark.parametrize(("budget", "n_init"), [
    (1, 4), (8, 4), (24, 4), (100, 5), (150, 6), (400, 10), (1000, 16), (1600, 20), (10**6, 20)])
def test_auto_n_init_is_the_sqrt_rule_clamped(budget: int, n_init: int) -> None:
    assert auto_n_init(budget) == n_init


@pytest.mark.parametrize("name", ["bo", "lamcts_bo"])
def test_auto_n_init_follows_the_budget_and_an_explicit_integer_wins(name: str) -> None:
    knobs = {**FAST[name], "name": name}
    for budget in (24, 150, 400):
        auto = make_searcher({**knobs, "n_init": "auto"}, grid_pool(), CARD, budget=budget)
        assert auto.gp.n_init == auto_n_init(budget)
        assert make_searcher({**knobs, "n_init": 9}, grid_pool(), CARD, budget=budget).gp.n_init == 9
    # no budget (an open-ended search): the rule's cap, the former fixed default
    assert make_searcher({**knobs, "n_init": "auto"}, grid_pool(), CARD).gp.n_init == 20
    with pytest.raises(ValueError, match="budget is 0"):
        make_searcher({**knobs, "n_init": "auto"}, grid_pool(), CARD, budget=0)
    with pytest.raises(ValueError, match="n_init is 'sometimes'"):
        make_searcher({**knobs, "n_init": "sometimes"}, grid_pool(), CARD, budget=24)


def test_the_default_configs_scale_the_random_start(composed) -> None:
    from omegaconf import OmegaConf

    for name in ("bo", "lamcts_bo"):
        cfg = composed("search", f"searcher={name}", "search.n_trials=24")
        assert cfg.searcher.n_init == "auto"
        searcher = make_searcher(OmegaConf.to_container(cfg.searcher), grid_pool(), CARD, budget=24)
        # the default run's 24 trials: 4 random, 20 chosen by the model (>= 2/3)
        assert searcher.gp.n_init == 4


# ---- each searcher's proposers on a tiny pool --------------------------------------------------
@pytest.mark.parametrize("name", ["bo", "lamcts_bo"])
@pytest.mark.parametrize("q", [1, 4])
def test_gp_searchers_say_random_start_then_model(name: str, q: int) -> None:
    pool = grid_pool()
    by = drive(make_searcher({"name": name, **FAST[name]}, pool, CARD), pool, 20, q)
    start = -(-FAST[name]["n_init"] // q) * q  # whole batches until n_init values are known
    assert by[:start] == ["random_start"] * start
    assert set(by[start:]) <= {"model", "fallback"} and by[start:].count("model") >= len(by[start:]) - q


def test_bo_says_fallback_when_the_values_carry_no_information() -> None:
    searcher = make_searcher({"name": "bo", **FAST["bo"]}, grid_pool(), CARD)
    first = np.arange(6)
    searcher.observe(first, np.zeros(6))  # n_init values, all equal: nothing to model
    searcher.propose(2)
    assert searcher.diagnostics["mode"] == "random-flat" and searcher.proposers == ["fallback"] * 2


def test_lamcts_says_fallback_when_it_uses_an_ancestor_region() -> None:
    """A leaf with fewer free members than q: the GP chooses in an ancestor's region."""
    pool = grid_pool()
    searcher = make_searcher({"name": "lamcts_bo", **FAST["lamcts_bo"]}, pool, CARD)
    drive(searcher, pool, 40, 8)
    seen = set()
    for _ in range(3):  # batches of a quarter of the pool: leaves run short of free members
        idx = searcher.propose(len(pool) // 4)
        used, depth = searcher.diagnostics["level_used"], searcher.diagnostics["path_depth"]
        assert searcher.proposers == ["model" if used == depth else "fallback"] * idx.size
        seen |= set(searcher.proposers)
        searcher.observe(idx, value(pool, idx))
    assert "fallback" in seen


def test_random_searcher_says_random() -> None:
    pool = grid_pool()
    assert set(drive(make_searcher("random", pool, CARD), pool, 12, 4)) == {"random"}


def test_the_pools_last_rows_are_fallback() -> None:
    searcher = make_searcher("random", grid_pool()[:5], CARD)
    assert searcher.propose(8).size == 5 and searcher.proposers == ["fallback"] * 5


@pytest.mark.parametrize("name", ["evolution", "regularized_evolution"])
def test_evolution_says_random_start_then_model_for_a_child_in_the_pool(name: str) -> None:
    card = np.array([3, 3, 3])
    pool = np.array(list(itertools.product(range(3), range(3), range(3))), dtype=np.int16)
    searcher = make_searcher({"name": name, "population_size": 4, "sample_size": 2}, pool, card)
    by = drive(searcher, pool, 12, 1)
    assert by[:4] == ["random_start"] * 4 and set(by[4:]) <= {"model", "fallback"}
    assert by[4:].count("model") >= 4  # the whole space is the pool: mutants are mostly free


def test_evolution_says_fallback_for_a_stand_in_at_a_distance() -> None:
    pool = grid_pool()[::7]  # a sparse pool: most mutants are not in it
    searcher = make_searcher({"name": "evolution", **FAST["evolution"]}, pool, CARD)
    drive(searcher, pool, 8, 8)
    searcher.propose(8)
    # a child is `model` exactly when it is the mutant itself (distance 0)
    assert searcher.proposers.count("fallback") > 0
    assert (searcher.diagnostics["mean_distance"] == 0) == (searcher.proposers.count("fallback") == 0)


def test_local_search_says_random_start_neighbours_model_and_fill_fallback() -> None:
    card = np.array([3, 3])
    pool = np.array(list(itertools.product(range(3), range(3))), dtype=np.int16)
    searcher = make_searcher({"name": "local_search", "n_init": 1}, pool, card)
    searcher.propose(1)
    assert searcher.proposers == ["random_start"]
    searcher = make_searcher({"name": "local_search", "n_init": 1}, pool, card)
    searcher.observe(np.array([4]), np.array([1.0]))  # centre (1, 1): 4 neighbours
    idx = searcher.propose(6)
    neighbour = [int((pool[i] != pool[4]).sum()) == 1 for i in idx]
    assert searcher.proposers == ["model" if n else "fallback" for n in neighbour]
    assert searcher.proposers.count("model") == 4


def test_tpe_says_random_start_for_its_startup_trials_then_model_or_fallback() -> None:
    pytest.importorskip("optuna")
    card = np.array([2, 2, 2, 2])
    pool = np.array(list(itertools.product(*[range(2)] * 4)), dtype=np.int16)
    searcher = make_searcher("tpe", pool, card, seed=0)
    by = []
    while searcher.n_observed < 14:
        idx = searcher.propose(1)
        by += searcher.proposers
        # a sample that is itself a free row is the model's; its nearest stand-in a fallback
        if searcher.n_observed >= 10:
            assert searcher.proposers == ["model" if searcher.diagnostics["mean_distance"] == 0
                                          else "fallback"]
        searcher.observe(idx, value(pool, idx))
    assert by[:10] == ["random_start"] * 10 and set(by[10:]) <= {"model", "fallback"}


# ---- the journal, results.csv, the summary ------------------------------------------------
def test_the_journal_keeps_the_proposer_and_reads_older_lines_without_one(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"number": 0, "job": 0, "encoding": [1], "est_latency_ms": 1.0, '
                    '"status": "completed", "value": 0.5}\n')  # written before the field existed
    log = Journal(path)
    log.append(Trial(1, 1, [2], 1.0, pool_index=3, proposer="model"))  # interrupted while running
    loaded = log.load()
    assert loaded[0].proposer is None and loaded[1].proposer == "model"
    rerun = loaded[1]  # an interrupted trial runs again as the same Trial: its proposer stays
    rerun.job, rerun.status, rerun.value = 2, "completed", 0.7
    log.append(rerun)
    assert Journal(path).load()[1].proposer == "model"


def test_the_summary_counts_the_proposers() -> None:
    trials = [Trial(i, i, [0], 1.0, pool_index=i, proposer=p) for i, p in
              enumerate(["random_start"] * 3 + ["model"] * 5)]
    assert proposer_line(trials) == "8 trials: 5 by the model, 3 random start"
    trials.append(Trial(8, 8, [0], 1.0, pool_index=8, proposer="fallback"))
    assert proposer_line(trials) == "9 trials: 5 by the model, 3 random start, 1 fallback"
    trials += [Trial(n, n, [1], 1.0, pool_index=None, proposer="model") for n in (9, 10)]
    assert proposer_line(trials) == ("11 trials: 7 by the model, 3 random start, 1 fallback "
                                     "(2 beyond the tier's pool)")
    assert proposer_line([Trial(0, 0, [0], 1.0)]) is None  # an older journal: no line


@pytest.mark.e2e  # the app in a subprocess
def test_a_search_journals_its_proposers_and_writes_them_to_results_csv(shared, tmp_path) -> None:
    """The app with lamcts_bo's default random start (auto: 4 of 8 trials), on a synthetic
    objective: the journal, results.csv and the summary say who proposed each trial."""
    sweep = tmp_path / "s"
    cmd = search_cmd(shared, sweep, "searcher=lamcts_bo", "search.n_trials=8")
    out = run(cmd, tmp_path)
    final = {t["number"]: t for t in journal(sweep)}
    by = [final[n]["proposer"] for n in sorted(final)]
    assert by == ["random_start"] * 4 + ["model"] * 4
    assert [r["proposer"] for r in results(sweep)] == by
    assert "  proposed: 8 trials: 4 by the model, 4 random start" in out.stdout
    lines = len(journal(sweep))
    again = run(cmd, tmp_path)  # the same command resumes (the identity keeps n_init: auto)
    assert len(journal(sweep)) == lines and "  proposed: 8 trials: 4 by the model" in again.stdout
