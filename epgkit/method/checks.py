"""Typed checks of a component's values: each dataclass field against its annotation.

Gin passes whatever a config says. A float where an integer belongs (``InnerLoop.steps =
100.0``), a bool where a number belongs (``Experiment.batch_size = True``) or a number that is
not finite (``InnerLoop.lr = 1e999``) would otherwise fail deep inside a run, or not at all.
``check`` turns them into one sentence per value naming it and what is allowed; every built-in
component calls it first in ``__post_init__`` (its range checks compare numbers), and
``check_all`` checks a whole experiment in one pass, the user's own components included.

Only the annotations a config can get wrong are checked: bool, int, float, str, None, and
tuples, lists and dicts of them; a component's own classes (``Any``, ``InnerLoop``, a
``Protocol``) are plug points and are not checked here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Iterator
from typing import Any


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of the init fields of a dataclass ({} if they cannot be)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001  (an annotation that cannot be resolved is not checked)
        return {}
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init and f.name in hints}


def _item(hint: Any) -> str:
    """What ``hint`` allows, as the end of "must be ..."."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if hint is bool:
        return "True or False"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_item(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a tuple whose items are each {_item(args[0])}"
    if origin is tuple:
        return f"a tuple of {len(args)} items ({', '.join(_item(a) for a in args)})"
    if origin is list:
        return f"a list whose items are each {_item(args[0])}" if args else "a list"
    if origin is dict:
        return f"a dict from {_item(args[0])} to {_item(args[1])}" if args else "a dict"
    return "anything"


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is what ``hint`` allows (True for annotations that are not checked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value))  # fmt: skip
    if hint is str:
        return isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):  # gin writes (a, b) and [a, b]; either is a sequence here
        if not isinstance(value, tuple | list):
            return False
        if not args:
            return True
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_fits, value, args))
    if origin is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    return True


def problems(obj: Any) -> list[str]:
    """One sentence per field of the dataclass ``obj`` whose value its annotation refuses, or
    that holds a class where a component belongs."""
    name = type(obj).__name__
    found = [
        f"{name}.{field} must be {_item(hint)}, got {getattr(obj, field)!r}"
        for field, hint in _hints(type(obj)).items()
        if not _fits(getattr(obj, field), hint)
    ]
    # `@EPGLoss` without brackets: gin passes the class, which fails later blaming the loss.
    return found + [
        f"{name}.{f.name} = @{cls.__name__} passes the class itself; write "
        f"@{cls.__name__}() (with the brackets, gin builds one)"
        for f in dataclasses.fields(obj)
        if isinstance(cls := getattr(obj, f.name), type)
    ]


def check(obj: Any) -> None:
    """Raises ``ValueError`` naming every field of ``obj`` whose value has the wrong type."""
    found = problems(obj)
    if found:
        raise ValueError("; ".join(found))


def refuse(owner: str, found: list[str]) -> None:
    """Raises ``ValueError("<owner>: a; b")`` for the non-empty sentences of ``found``, if any:
    the one message a component's ``__post_init__`` gives for all its bad values at once."""
    found = [p for p in found if p]
    if found:
        raise ValueError(f"{owner}: " + "; ".join(found))


def components(root: Any) -> Iterator[Any]:
    """``root`` and every dataclass instance reachable through its fields, once each."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            yield obj
            todo.extend(getattr(obj, f.name) for f in reversed(dataclasses.fields(obj)))
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, tuple | list):
            todo.extend(obj)


def check_all(root: Any) -> None:
    """Checks every component of ``root`` (an experiment, or a dict of inner loops) in one
    pass; raises ``ValueError`` naming every bad value found."""
    found = [p for obj in components(root) for p in problems(obj)]
    if found:
        raise ValueError("; ".join(dict.fromkeys(found)))
