"""IQM, probability of improvement and bootstrap intervals against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from epgkit.run.stats import bootstrap_ci, iqm, probability_of_improvement

# IQM of Exp(1): 2 ∫ x e^{-x} dx between its quartiles ln(4/3) and ln 4.
EXP_IQM = 2 * ((math.log(4 / 3) + 1) * 0.75 - (math.log(4) + 1) * 0.25)


def trimmed_mean(x: np.ndarray) -> float:
    """The IQM written out: sort, cut ⌊n/4⌋ from each end, average the rest."""
    x, cut = np.sort(x), len(x) // 4
    return float(np.mean(x[cut : len(x) - cut]))


def pairwise(x: list[float], y: list[float]) -> float:
    """P(X > Y) + ½ P(X = Y) as a double loop over runs."""
    wins = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    return wins / (len(x) * len(y))


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1, 9)) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5
    assert iqm([1, 2, 3, 4, 100]) == 3.0  # one cut from each end of 5
    assert iqm([5.0]) == 5.0
    assert iqm([1, 2, 3, 4, 1000, -1000, 0, 5]) == 2.5  # outliers have no weight


def test_iqm_leaves_out_failed_runs_and_works_on_rows():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8, -math.inf, math.nan]) == 4.5
    assert math.isnan(iqm([])) and math.isnan(iqm([math.nan, -math.inf]))
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, 13))
    assert iqm(rows) == pytest.approx([trimmed_mean(r) for r in rows])
    for n in range(1, 12):
        x = rng.exponential(size=n)
        assert iqm(x) == pytest.approx(trimmed_mean(x))


def test_iqm_ci_contains_the_true_iqm_and_shrinks_with_more_runs():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 200, 2_000):
        low, high = bootstrap_ci(iqm, rng.exponential(size=n))
        assert low < EXP_IQM < high
        widths.append(high - low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # about 1/√n: √10 ≈ 3.2 a step


def test_iqm_ci_covers_the_true_iqm_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(200):
        low, high = bootstrap_ci(iqm, rng.exponential(size=20), reps=2_000, seed=trial)
        hits += low < EXP_IQM < high
    assert 0.85 <= hits / 200 <= 0.99


def test_probability_of_improvement_known_answers():
    x, y = [3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 2.5]
    assert probability_of_improvement(x, y) == 1.0  # X dominates
    assert probability_of_improvement(y, x) == 0.0
    assert probability_of_improvement(x, x) == 0.5  # identical samples
    # By hand: 1 beats 0; 2 beats 0 and ties 2 twice; 3 beats all three. (1 + 2 + 3) / 9.
    assert probability_of_improvement([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)
    assert probability_of_improvement([1, 1], [1, 2]) == 0.25  # ties count half: 2 × ½ of 4
    assert probability_of_improvement([7], [7]) == 0.5


def test_probability_of_improvement_matches_the_double_loop_and_leaves_out_failures():
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, y = rng.integers(0, 5, rng.integers(1, 9)), rng.integers(0, 5, rng.integers(1, 9))
        p = probability_of_improvement(x, y)
        assert p == pytest.approx(pairwise(list(x), list(y)))
        assert p + probability_of_improvement(y, x) == pytest.approx(1.0)
    assert probability_of_improvement([1, math.nan, 3, -math.inf], [2]) == 0.5
    assert math.isnan(probability_of_improvement([math.nan], [1.0]))


def test_bootstrap_is_reproducible_and_paired_resampling_keeps_tasks_together():
    rng = np.random.default_rng(4)
    task = rng.normal(0, 10, 20)  # task difficulty, shared by both methods
    x, y = task + rng.normal(0, 1, 20), task - 1 + rng.normal(0, 1, 20)
    ci = bootstrap_ci(probability_of_improvement, x, y, paired=True)
    assert ci == bootstrap_ci(probability_of_improvement, x, y, paired=True)
    assert bootstrap_ci(iqm, x) == bootstrap_ci(iqm, x, seed=0) != bootstrap_ci(iqm, x, seed=1)
    assert ci[0] <= probability_of_improvement(x, y) <= ci[1]
    independent = bootstrap_ci(probability_of_improvement, x, y)
    # Shared task difficulty makes the paired estimate far less variable.
    assert ci[1] - ci[0] < 0.5 * (independent[1] - independent[0])


def test_bootstrap_of_a_dominating_method_and_of_degenerate_samples():
    x, y = np.arange(10.0, 20.0), np.arange(10.0)
    assert bootstrap_ci(probability_of_improvement, x, y, paired=True) == (1.0, 1.0)
    assert bootstrap_ci(iqm, [3.0]) == (3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_ci(iqm, []))
    assert all(math.isnan(v) for v in bootstrap_ci(iqm, [math.nan, -math.inf]))
    with pytest.raises(ValueError, match="same number of runs, not 3, 2"):
        bootstrap_ci(probability_of_improvement, [1, 2, 3], [1, 2], paired=True)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(iqm, [1.0, 2.0], level=95)
