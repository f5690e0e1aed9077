"""A wheel ships every package of the source tree: pyproject.toml lists them one by one."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_source_tree_is_listed_in_pyproject():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join((name, *init.parent.relative_to(ROOT / folder).parts)))
    assert {"epgkit", "epgkit.envs", "epgkit.method.losses"} <= found  # the walk sees subpackages
    assert found <= set(setuptools["packages"]), sorted(found - set(setuptools["packages"]))
