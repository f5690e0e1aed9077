"""The README's main job end to end (slow: minutes; run with `pytest -m slow`)."""

from __future__ import annotations

import statistics

import pytest

from epgkit.run.cluster import connect
from epgkit.run.launch import prepare, run_evolution
from epgkit.run.rundir import RunDir


@pytest.mark.slow
def test_quickstart_fitness_rises(tmp_path):
    prepared = prepare(["quickstart.gin"], [f"Launch.run_dir = '{tmp_path / 'run'}'"])
    with connect(2) as executor:
        run_evolution(prepared, executor, echo=lambda line: None)
    rows = RunDir(tmp_path / "run").metrics()
    fifth = len(rows) // 5
    first = statistics.mean(r["fitness_mean"] for r in rows[:fifth])
    last = statistics.mean(r["fitness_mean"] for r in rows[-fifth:])
    assert len(rows) == prepared.exp.epochs and last > first + 20
