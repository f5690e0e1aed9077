"""The loss zoo: every shipped loss loads safely, has provenance, and trains an inner loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from epgkit.method.executor import Serial
from epgkit.run import train as tt
from epgkit.run import zoo
from epgkit.run.sources import load_source

ENTRIES = list(zoo.entries())


def test_the_zoo_is_not_empty():
    assert ENTRIES


@pytest.mark.parametrize("name", ENTRIES)
def test_zoo_loss_loads_and_trains_one_inner_loop(name):
    entry = zoo.entries()[name]
    assert {"env_id", "summary", "command", "git_sha", "test"} <= set(entry)
    source = load_source(f"zoo:{name}")
    assert source.meta["env_id"] == entry["env_id"]
    loops = tt.methods(tt.build(source), [], None, None)
    tt.check_fits(loops["epg"], source)
    (result,) = tt.run_methods(loops, tt.test_jobs(source.phi, 1, seed=0), 1, Serial())["epg"]
    assert result.failed is None and math.isfinite(result.fitness)


@pytest.mark.parametrize("name", [n for n in ENTRIES if "baselines_gin" in zoo.entries()[n]])
def test_a_zoo_loss_carries_the_baselines_of_the_gin_file_it_names(name):
    # Re-tuning a baseline means re-testing the losses that carry it: the shipped config and
    # the gin file must not drift apart.
    source = load_source(f"zoo:{name}")
    carried = tt.build(source)
    included = tt.build(source, [f"include '{zoo.entries()[name]['baselines_gin']}'"])
    assert set(carried.baselines) == set(included.baselines) and carried.baselines
    names = list(included.baselines)
    assert tt.methods(carried, names, None, None) == tt.methods(included, names, None, None)


def test_an_unknown_zoo_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="Known: "):
        zoo.path("zoo:no-such-loss")


def test_randomhopper_small_keeps_the_stock_reward_it_was_evolved_and_tested_with():
    # docs/results.md §2 evolved and tested it with +1 per healthy step (then the default); its
    # recorded config binds that reward, for the loss and for every baseline alike.
    loops = tt.methods(tt.build(load_source("zoo:randomhopper-small")), ["ppo", "reinforce"],
                       None, None)  # fmt: skip
    assert set(loops) == {"epg", "ppo", "reinforce"}
    for name, loop in loops.items():
        assert dict(loop.env_kwargs) == {"healthy_reward": 1.0}, name
        env = loop.make_env(tt.test_jobs(np.zeros(0), 1, seed=0)[0].task_seed)
        env.reset(seed=0)
        for _ in range(5):
            _, reward, terminated, _, info = env.step(np.zeros(env.action_space.shape))
            assert not terminated and info["reward_survive"] == 1.0
            assert reward == pytest.approx(info["x_velocity"] + 1.0 + info["reward_ctrl"])
