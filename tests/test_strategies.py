"""The ES strategies, tested over every registered one, plus each one's own details."""

from __future__ import annotations

import dataclasses
import io
import json

import gin
import numpy as np
import pytest
import torch

from epgkit.components import registered
from epgkit.method.evolve import load_state, save_state
from epgkit.method.executor import Serial
from epgkit.method.strategies import SNES, OpenES, SepCMAES, Strategy, centered_ranks, shaped
from epgkit.method.strategies.snes import utilities
from epgkit.run.launch import prepare, run_evolution
from epgkit.run.rundir import RunDir

STRATEGIES = list(registered("strategy"))


def make(name: str, population: int = 8, **kwargs) -> Strategy:
    """A registered strategy with V = ``population`` and, where it has one, σ = 0.1."""
    cls = registered("strategy")[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(population=population, **({"sigma": 0.1} if "sigma" in fields else {}), **kwargs)


def advance(es: Strategy, state, steps: int, seed: int = 0):
    """``steps`` epochs on a fixed random fitness landscape, each epoch with its own rng."""
    target = np.linspace(-1.0, 1.0, es.mean(state).size)
    for epoch in range(steps):
        rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
        draws = es.ask(state, rng)
        state = es.tell(state, draws, -((es.candidates(state, draws) - target) ** 2).sum(1))
    return state


def saved_equal(es: Strategy, a, b) -> bool:
    """Two states are equal when every array and number they save is (bit for bit)."""
    sa, sb = es.save(a), es.save(b)
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_follows_the_protocol(name):
    es = make(name)
    assert isinstance(es, Strategy)
    state = es.init(np.zeros(6))
    draws = es.ask(state, np.random.default_rng(0))
    assert es.candidates(state, draws).shape == (8, 6)
    np.testing.assert_array_equal(es.mean(state), np.zeros(6))
    assert all(isinstance(v, float) and np.isfinite(v) for v in es.metrics(state).values())
    shared = es.shared_tasks()
    assert len(shared) == es.population and all(0 <= s < es.population for s in shared)
    assert all(shared[s] == s for s in shared)  # a candidate shares the tasks of one that owns them


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_optimizes_a_shifted_quadratic_in_200_dimensions(name):
    es = make(name, population=32)
    state = es.init(np.zeros(200))
    target = np.linspace(-1.0, 1.0, 200)
    before = ((es.mean(state) - target) ** 2).sum()
    after = ((es.mean(advance(es, state, 300)) - target) ** 2).sum()
    assert after < 0.1 * before, (before, after)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_is_a_pure_function_of_state_and_rng(name):
    es = make(name)
    state = advance(es, es.init(np.zeros(5)), 3)
    before = {k: np.copy(v) for k, v in es.save(state).items()}
    results = []
    for _ in range(2):
        draws = es.ask(state, np.random.default_rng(7))
        results.append(es.tell(state, draws, np.arange(8.0)))
    assert saved_equal(es, *results)
    assert not saved_equal(es, state, results[0])  # tell returned a new state ...
    assert all(np.array_equal(before[k], v) for k, v in es.save(state).items())  # ... only


@pytest.mark.parametrize("name", STRATEGIES)
def test_only_the_order_of_fitness_matters(name):
    es = make(name)
    state = advance(es, es.init(np.zeros(5)), 2)
    draws = es.ask(state, np.random.default_rng(3))
    fitness = np.random.default_rng(4).standard_normal(8)
    assert saved_equal(
        es, es.tell(state, draws, fitness), es.tell(state, draws, np.exp(3 * fitness) - 7)
    )


@pytest.mark.parametrize("name", STRATEGIES)
def test_checkpoint_round_trip_gives_the_same_next_epoch(name):
    es = make(name)
    state = advance(es, es.init(np.zeros(5)), 4)
    buffer = io.BytesIO()
    torch.save(save_state(es, state), buffer)
    buffer.seek(0)
    restored = load_state(es, torch.load(buffer, weights_only=True))
    assert saved_equal(es, state, restored)
    assert saved_equal(es, advance(es, state, 2, seed=5), advance(es, restored, 2, seed=5))


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_state_missing_a_key_is_refused_naming_it(name):
    es = make(name)
    saved = save_state(es, es.init(np.zeros(5)))
    for key in saved:
        with pytest.raises(ValueError, match=repr(key)):
            es.load({k: v for k, v in saved.items() if k != key})


@pytest.mark.parametrize("name", STRATEGIES)
def test_failed_candidates_rank_last_and_leave_no_nan(name):
    es = make(name)
    state = es.init(np.ones(5))
    draws = es.ask(state, np.random.default_rng(0))
    fitness = np.arange(8.0)
    fitness[[1, 6]] = -np.inf
    after = es.tell(state, draws, fitness)
    assert all(np.isfinite(v).all() for v in es.save(after).values())
    assert not np.array_equal(es.mean(after), es.mean(state))
    nothing = es.tell(state, draws, np.full(8, -np.inf))  # every inner loop failed
    assert saved_equal(es, nothing, state)


@pytest.mark.parametrize("name", STRATEGIES)
def test_same_rng_gives_the_same_run(name):
    es = make(name)
    runs = [advance(es, es.init(np.zeros(5)), 5, seed=1) for _ in range(2)]
    assert saved_equal(es, *runs)
    assert not saved_equal(es, runs[0], advance(es, es.init(np.zeros(5)), 5, seed=2))


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


ANTITHETIC = [n for n in STRATEGIES if "antithetic" in {f.name for f in
              dataclasses.fields(registered("strategy")[n])}]  # fmt: skip


@pytest.mark.parametrize("name", ANTITHETIC)
def test_antithetic_pairs_share_tasks_and_still_optimize(name):
    es = make(name, population=32, antithetic=True)
    assert es.shared_tasks() == tuple(range(16)) * 2
    state = es.init(np.zeros(200))
    draws = es.ask(state, np.random.default_rng(0))
    np.testing.assert_array_equal(draws[:16], -draws[16:])
    target = np.linspace(-1.0, 1.0, 200)
    after = ((es.mean(advance(es, state, 300)) - target) ** 2).sum()
    assert after < 0.1 * (target**2).sum()


@pytest.mark.parametrize("name", ANTITHETIC)
def test_no_step_when_every_pair_tied(name):
    # Guidance α = 1: fitness ignores φ and each ±v pair, on the same tasks, ties exactly.
    es = make(name, population=8, antithetic=True)
    state = es.init(np.array([1.0, -2.0, 0.5]))
    fitness = np.array([1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0])
    after = es.tell(state, es.ask(state, np.random.default_rng(0)), fitness)
    assert saved_equal(es, after, state)


def test_shaped_fitness_averages_ties_and_puts_failures_last():
    table = np.array([-3.0, -1.0, 1.0, 3.0])
    np.testing.assert_array_equal(shaped(np.array([5.0, -np.inf, 5.0, 0.0]), table), [2, -3, 2, -1])


def test_snes_utilities_follow_nes_fitness_shaping():
    u = utilities(4)  # worst first; the best two get ln(3) − ln(k), normalized, minus 1/4
    raw = np.array([0.0, 0.0, np.log(3) - np.log(2), np.log(3)])
    np.testing.assert_allclose(u, raw / raw.sum() - 0.25)
    assert u.sum() == pytest.approx(0.0)


def test_snes_step_follows_the_natural_gradient():
    es = SNES(population=4, sigma=0.5, lr_mean=1.0, lr_sigma=0.2)
    state = es.init(np.array([1.0, -2.0]))
    z = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -1.0]])
    fitness = np.array([4.0, 1.0, 2.0, 3.0])
    u = utilities(4)[[3, 0, 1, 2]]  # the ranks of this fitness
    after = es.tell(state, z, fitness)
    np.testing.assert_allclose(after.mu, state.mu + 0.5 * (u @ z))
    np.testing.assert_allclose(after.sigma, 0.5 * np.exp(0.1 * (u @ (z**2 - 1))))


def test_snes_shrinks_sigma_near_the_optimum():
    es = SNES(population=16, sigma=1.0)
    state = advance(es, es.init(np.linspace(-1.0, 1.0, 20)), 200)
    assert state.sigma.max() < 0.5


def test_sep_cma_rebuilt_each_epoch_follows_a_long_lived_cma_object():
    # The state SepCMAES keeps is all that cma's diagonal update reads: a single cma object
    # told the same candidates takes the same steps, bit for bit.
    es = SepCMAES(population=16, sigma=0.5)
    state = es.init(np.full(50, 3.0))
    live = es._build(state, np.zeros((16, 50)))
    rng = np.random.default_rng(0)
    for _ in range(30):
        draws = es.ask(state, rng)
        object.__setattr__(live.opts["randn"], "draws", draws)  # its next ask samples these
        candidates = np.asarray(live.ask())
        np.testing.assert_array_equal(candidates, es.candidates(state, draws))
        fitness = -(candidates**2).sum(1)
        live.tell(list(candidates), list(-centered_ranks(fitness)))
        state = es.tell(state, draws, fitness)
    np.testing.assert_array_equal(live.mean, state.mean)
    np.testing.assert_array_equal(live.sigma_vec.scaling, state.scales)
    np.testing.assert_array_equal(live.adapt_sigma.ps, state.ps)
    assert live.sigma == state.sigma and live.countiter == state.step == 30


def test_sep_cma_never_touches_numpy_global_generator():
    before = np.random.get_state()[1].copy()
    es = SepCMAES(population=8)
    advance(es, es.init(np.zeros(10)), 3)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SNES, {"sigma": 0.0}),
        (SNES, {"lr_mean": -1.0}),
        (SNES, {"lr_sigma": 0.0}),
        (SNES, {"population": 5, "antithetic": True}),
        (SNES, {"sigma": "abc"}),
        (SepCMAES, {"sigma": -0.1}),
        (SepCMAES, {"population": 3}),
        (SepCMAES, {"population": 4.0}),
    ],
)
def test_invalid_settings_of_the_other_strategies_are_refused(cls, kwargs):
    with pytest.raises(ValueError, match=cls.__name__):
        cls(**kwargs)


def evolution(run_dir, name: str, epochs: int, resume: bool = False) -> dict:
    """A tiny quickstart evolution with ``name`` as the outer optimizer, through the launcher
    ``epgkit evolve`` uses (in process, as ``--workers 0``); returns its checkpoint."""
    if resume:
        prepared = prepare([], [f"Experiment.epochs = {epochs}"], resume=str(run_dir))
    else:
        prepared = prepare(["quickstart.gin", "debug.gin"], [
            f"Experiment.strategy = @{name}()", f"{name}.population = 4",
            "Experiment.inner_loops = 4", f"Experiment.epochs = {epochs}",
            f"Experiment.run_dir = '{run_dir}'",
        ])  # fmt: skip
    run_evolution(prepared, Serial(), echo=lambda line: None)
    return RunDir(run_dir).load_checkpoint()


@pytest.mark.parametrize("name", STRATEGIES)
def test_an_evolution_resumes_bit_identically(tmp_path, name):
    whole = evolution(tmp_path / "whole", name, 3)
    evolution(tmp_path / "cut", name, 2)
    gin.clear_config()
    resumed = evolution(tmp_path / "cut", name, 3, resume=True)
    assert whole.keys() == resumed.keys() and whole["epoch"] == 3
    for key in whole.keys() - {"metrics_line", "log_digests"}:  # the metrics hold wall times
        assert np.array_equal(whole[key], resumed[key]), key
    records = [json.loads(c["log_digests"])["inner_loops.jsonl"] for c in (whole, resumed)]
    assert records[0] == records[1]
    untimed = [json.loads(c["metrics_line"]) for c in (whole, resumed)]
    for m in untimed:
        del m["wall_s"]
    assert untimed[0] == untimed[1]
    es = registered("strategy")[name](population=4)
    assert not np.array_equal(es.mean(load_state(es, whole)), whole["best_phi"])  # it moved
    rows = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert set(es.metrics(load_state(es, whole))) <= set(rows[-1])
