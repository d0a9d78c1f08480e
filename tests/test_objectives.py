"""Synthetic objectives: the mapping onto the box, the BoTorch functions, noise, configs, errors."""


import numpy as np
import pytest
import torch
from botorch.test_functions.synthetic import Levy

from gpunet.search.objectives import (
    FUNCTIONS,
    SyntheticObjective,
    evaluate_objective,
    make_objective,
)

CARD = np.array([3, 5, 2, 1, 7])


def test_digits_map_linearly_onto_the_common_box() -> None:
    objective = SyntheticObjective("ackley", CARD, bounds=(-2.0, 4.0))
    box = objective.to_box(np.array([[0, 4, 1, 0, 3]])).numpy()
    # 0 -> lower, top digit -> upper, a single-choice digit -> centre, 3 of 0..6 -> centre
    np.testing.assert_allclose(box, [[-2.0, 4.0, 4.0, 1.0, 1.0]])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_values_are_the_negated_botorch_function(name: str) -> None:
    objective = SyntheticObjective(name, CARD)
    rows = np.array([[0, 0, 0, 0, 0], [1, 2, 1, 0, 6], [2, 4, 0, 0, 3]])
    expected = -FUNCTIONS[name](dim=CARD.size).evaluate_true(objective.to_box(rows)).numpy()
    np.testing.assert_allclose(objective(rows), expected)


def test_optimum_of_ackley_is_the_centre_encoding() -> None:
    card = np.array([3, 5, 7])
    objective = SyntheticObjective("ackley", card)
    grid = np.stack(np.meshgrid(*[np.arange(c) for c in card], indexing="ij"), -1).reshape(-1, 3)
    values = objective(grid)
    assert grid[np.argmax(values)].tolist() == [1, 2, 3]
    assert values.max() == pytest.approx(0.0, abs=1e-9)


def test_levy_on_a_custom_box_matches_botorch() -> None:
    objective = SyntheticObjective("levy", np.array([11, 11]), bounds=(-10.0, 10.0))
    value = objective(np.array([5, 10]))
    assert value[0] == pytest.approx(-Levy(dim=2).evaluate_true(torch.tensor([[0.0, 10.0]]))[0])


def test_noise_is_reproducible_per_seed_and_encoding() -> None:
    rows = np.array([[0, 1, 1, 0, 2], [2, 3, 0, 0, 5], [0, 1, 1, 0, 2]])
    clean = SyntheticObjective("rastrigin", CARD)(rows)
    noisy = SyntheticObjective("rastrigin", CARD, noise_std=0.5, seed=1)(rows)
    again = SyntheticObjective("rastrigin", CARD, noise_std=0.5, seed=1)(rows)
    other = SyntheticObjective("rastrigin", CARD, noise_std=0.5, seed=2)(rows)
    assert not np.allclose(noisy, clean)
    np.testing.assert_array_equal(noisy, again)
    assert noisy[0] == noisy[2]  # same encoding, same frozen noise
    assert not np.allclose(noisy, other)
    assert np.abs(noisy - clean).max() < 5 * 0.5


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_config_file_builds_and_evaluates(composed, name: str) -> None:
    cfg = composed("search", f"objective={name}").objective  # the group also holds `train`, not ours
    assert cfg.name == name
    row = np.array([1, 2, 0, 0, 6])
    value = evaluate_objective(cfg, row, CARD)
    assert isinstance(value, float)
    assert value == pytest.approx(make_objective(name, CARD)(row)[0])


def test_config_knobs_are_used() -> None:
    cfg = {"name": "styblinski_tang", "bounds": [-1.0, 1.0], "noise_std": 0.0, "seed": 3}
    row = [0, 0, 0, 0, 0]  # every digit at -1 except the single-choice one at 0
    x = np.array([-1.0, -1.0, -1.0, 0.0, -1.0])
    expected = -0.5 * np.sum(x**4 - 16 * x**2 + 5 * x)
    assert evaluate_objective(cfg, row, CARD) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: SyntheticObjective("sphere", CARD), "unknown objective 'sphere'"),
        (lambda: SyntheticObjective("ackley", CARD, bounds=(1, 1)), "lower < upper"),
        (lambda: SyntheticObjective("ackley", CARD, noise_std=-1), "noise_std is -1"),
        (lambda: SyntheticObjective("ackley", [3, 0]), "integers >= 1"),
        (lambda: make_objective({"bounds": [0, 1]}, CARD), "has no 'name'"),
        (lambda: make_objective({"name": "ackley", "noise": 1}, CARD), r"knob\(s\) \['noise'\]"),
        (lambda: evaluate_objective("ackley", [3, 0, 0, 0, 0], CARD), "digit 0 is 3"),
        (lambda: evaluate_objective("ackley", [0, 0, 0], CARD), r"shape \(N, 5\)"),
        (lambda: evaluate_objective("ackley", [0.5, 0, 0, 0, 0], CARD), "integer dtype"),
    ],
)
def test_bad_input_is_a_clear_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
