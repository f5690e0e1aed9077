"""The loss zoo: every shipped loss loads safely, has provenance, and trains an inner loop."""

from __future__ import annotations

import math

import pytest

from epgkit import train as tt
from epgkit import zoo
from epgkit.cluster import InProcess

ENTRIES = list(zoo.entries())


def test_the_zoo_is_not_empty():
    assert ENTRIES


@pytest.mark.parametrize("name", ENTRIES)
def test_zoo_loss_loads_and_trains_one_inner_loop(name):
    entry = zoo.entries()[name]
    assert {"env_id", "summary", "command", "git_sha", "test"} <= set(entry)
    source = tt.load_source(f"zoo:{name}")
    assert source.meta["env_id"] == entry["env_id"]
    loops = tt.methods(tt.build(source), [], None, None)
    tt.check_fits(loops["epg"], source)
    (result,) = tt.run_methods(loops, tt.test_jobs(source.phi, 1, seed=0), 1, InProcess())["epg"]
    assert result.failed is None and math.isfinite(result.fitness)


def test_an_unknown_zoo_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="Known: "):
        zoo.path("zoo:no-such-loss")
