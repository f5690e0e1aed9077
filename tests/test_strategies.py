"""The ES strategies, tested over every registered one, plus the paper's OpenES details."""

from __future__ import annotations

import numpy as np
import pytest

from epgkit.components import registered
from epgkit.method.strategies import OpenES, centered_ranks

STRATEGIES = list(registered("strategy"))


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("antithetic", [False, True])
def test_strategy_solves_sphere(name, antithetic):
    es = registered("strategy")[name](
        population=32,
        sigma=0.1,
        lr_start=0.05,
        lr_end=0.01,
        lr_decay_steps=200,
        l2=0.0,
        antithetic=antithetic,
    )
    state = es.init(np.full(10, 3.0))
    rng = np.random.default_rng(1)
    for _ in range(300):
        noise = es.ask(state, rng)
        state = es.tell(state, noise, -(es.candidates(state, noise) ** 2).sum(1))
    assert np.abs(state.phi).max() < 0.2


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_is_a_pure_function_of_state_and_rng(name):
    es = registered("strategy")[name](population=8)
    state = es.init(np.zeros(5))
    results = []
    for _ in range(2):
        noise = es.ask(state, np.random.default_rng(7))
        results.append(es.tell(state, noise, np.arange(8.0)).phi)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(state.phi, np.zeros(5))  # tell returned a new state


def test_centered_ranks_span_minus_half_to_half_and_put_failures_last():
    ranks = centered_ranks(np.array([3.0, -np.inf, 10.0, 0.0]))
    np.testing.assert_allclose(ranks, [1 / 6, -0.5, 0.5, -1 / 6])
    assert ranks.sum() == pytest.approx(0.0)


def test_equal_fitness_gets_equal_ranks_so_a_tied_antithetic_pair_cancels():
    ranks = centered_ranks(np.array([2.0, 5.0, 2.0, -np.inf, 5.0, -np.inf]))
    np.testing.assert_allclose(ranks, np.array([2.5, 4.5, 2.5, 0.5, 4.5, 0.5]) / 5 - 0.5)
    es = OpenES(population=4, antithetic=True, l2=0.0)
    state = es.init(np.zeros(3))
    noise = es.ask(state, np.random.default_rng(0))
    # Pair 0 (±v0) tied, pair 1 did not: whatever v0 is, the step is the same.
    other = noise.copy()
    other[0], other[2] = noise[1] * 3.0 + 1.0, -(noise[1] * 3.0 + 1.0)
    fitness = np.array([1.0, 3.0, 1.0, 0.0])
    np.testing.assert_allclose(
        es.tell(state, noise, fitness).phi, es.tell(state, other, fitness).phi, atol=1e-12
    )


@pytest.mark.parametrize(
    ("antithetic", "fitness"),
    [
        (False, [1.5, 1.5, 1.5, 1.5]),
        (False, [-np.inf] * 4),
        (True, [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]),  # each ±v pair tied (α = 1)
    ],
)
def test_no_step_when_no_direction_did_better_than_its_opposite(antithetic, fitness):
    es = OpenES(population=len(fitness), antithetic=antithetic, l2=0.01)
    state = es.init(np.array([1.0, -2.0, 0.5]))
    after = es.tell(state, es.ask(state, np.random.default_rng(0)), np.array(fitness))
    np.testing.assert_array_equal(after.phi, state.phi)
    assert after.step == 0  # Adam's bias correction and the schedule count real steps only


def test_antithetic_noise_comes_in_pairs():
    es = OpenES(population=6, antithetic=True)
    noise = es.ask(es.init(np.zeros(4)), np.random.default_rng(0))
    np.testing.assert_array_equal(noise[:3], -noise[3:])


def test_gradient_step_follows_eq7_with_l2_and_adam_without_momentum():
    es = OpenES(population=4, sigma=0.5, lr_start=0.1, lr_end=0.1, l2=0.001, beta1=0.0)
    phi = np.array([1.0, -2.0])
    state = es.init(phi)
    noise = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    fitness = np.array([4.0, 1.0, 2.0, 3.0])
    grad = centered_ranks(fitness) @ noise / (4 * 0.5) - 0.001 * phi
    v_hat = grad**2  # β2 bias correction at step 1 leaves (1 − β2)·g² / (1 − β2)
    expected = phi + 0.1 * grad / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(es.tell(state, noise, fitness).phi, expected)


def test_step_size_anneals_linearly_then_stays():
    es = OpenES(lr_start=1e-2, lr_end=1e-3, lr_decay_steps=100)
    assert es.lr(0) == pytest.approx(1e-2)
    assert es.lr(50) == pytest.approx(5.5e-3)
    assert es.lr(100) == es.lr(1000) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sigma": 0.0},
        {"sigma": -1.0},
        {"sigma": "abc"},
        {"lr_start": -0.1},
        {"lr_end": -1e-3},
        {"sigma": float("nan")},
        {"l2": float("inf")},
        {"beta1": 1.0},
        {"beta2": -0.1},
        {"population": 1},
        {"population": 5, "antithetic": True},
    ],
)
def test_invalid_es_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="OpenES"):
        OpenES(**kwargs)
