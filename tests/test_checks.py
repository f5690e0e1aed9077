"""Typed checks of values against annotations, over every registered component."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from epgkit.components import KINDS, registered
from epgkit.method import checks


@dataclasses.dataclass(frozen=True)
class Sample:
    count: int = 1
    rate: float = 0.1
    flag: bool = False
    name: str | None = None
    sizes: tuple[int, ...] = (64, 64)
    pair: tuple[int, int] = (1, 2)
    table: dict[str, float] = dataclasses.field(default_factory=dict)
    anything: Any = None


@pytest.mark.parametrize(
    "change",
    [
        {"count": 3},
        {"rate": 2},  # an integer is a number
        {"name": "x"},
        {"sizes": [32]},  # gin writes lists as well as tuples
        {"sizes": ()},
        {"table": {"a": 1.0}},
        {"anything": object()},
    ],
)
def test_values_of_the_declared_type_pass(change):
    assert checks.problems(Sample(**change)) == []


@pytest.mark.parametrize(
    "change,message",
    [
        ({"count": 2.0}, "Sample.count must be an integer, got 2.0"),
        ({"count": True}, "Sample.count must be an integer, got True"),
        ({"rate": float("nan")}, "Sample.rate must be a finite number, got nan"),
        ({"rate": float("-inf")}, "Sample.rate must be a finite number, got -inf"),
        ({"rate": False}, "Sample.rate must be a finite number, got False"),
        ({"flag": 1}, "Sample.flag must be True or False, got 1"),
        ({"name": 3}, "Sample.name must be a string or None, got 3"),
        ({"sizes": (64, 6.4)}, "Sample.sizes must be a tuple whose items are each an integer"),
        ({"pair": (1, 2, 3)}, "Sample.pair must be a tuple of 2 items (an integer, an integer)"),
        ({"table": {"a": "b"}}, "Sample.table must be a dict from a string to a finite number"),
    ],
)
def test_values_of_another_type_are_named_with_what_is_allowed(change, message):
    (problem,) = checks.problems(Sample(**change))
    assert problem.startswith(message)


@pytest.mark.parametrize(
    "binding,message",
    [
        ("InnerLoop.loss = @EPGLoss", "InnerLoop.loss = @EPGLoss passes the class itself"),
        ("InnerLoop.guide = @PPOLoss", "InnerLoop.guide = @PPOLoss passes the class itself"),
        ("InnerLoop.policy = @GaussianMLP", "write @GaussianMLP() (with the brackets"),
        ("Experiment.strategy = @OpenES", "Experiment.strategy = @OpenES passes the class"),
    ],
)
def test_a_component_bound_without_brackets_is_named_with_the_fix(binding, message):
    # Gin passes the class itself when the reference has no (); it used to fail later, in
    # the loss's methods, as a TypeError that blamed the loss (or the ES population).
    from epgkit.errors import ConfigError
    from epgkit.run import config

    config.parse(["quickstart.gin", "debug.gin"], [binding])
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.experiment()


def test_check_all_walks_nested_components_and_names_every_problem():
    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Any
        parts: dict[str, Any]
        epochs: int = 1

    outer = Outer(Sample(count=1.5), {"a": Sample(flag="yes")}, epochs=2.5)
    with pytest.raises(ValueError) as err:
        checks.check_all(outer)
    text = str(err.value)
    for name in ("Outer.epochs", "Sample.count", "Sample.flag"):
        assert name in text


@pytest.mark.parametrize(
    "component", [obj for kind in KINDS for obj in registered(kind).values()], ids=repr
)
def test_every_registered_components_defaults_pass_its_own_checks(component):
    # The fields without a default: InnerLoop's env, a scheduler's address.
    required = {"env_id": "epgkit/PointGoal-v0", "address": "tcp://127.0.0.1:8786"}
    names = {f.name for f in dataclasses.fields(component)}
    assert checks.problems(component(**{k: v for k, v in required.items() if k in names})) == []
