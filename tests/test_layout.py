"""The package's layout: no import cycle, and layers that import only downwards.

Every import counts, also one inside a function or under ``TYPE_CHECKING``: a cycle there
still ties the modules together for whoever reads or moves them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "epgkit"
ENVS = ROOT / "envs"  # imported as epgkit.envs


def _modules() -> dict[str, Path]:
    found = {}
    for base, prefix in ((PACKAGE, "epgkit"), (ENVS, "epgkit.envs")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The epgkit modules that module ``name`` imports (a package's ``__init__`` counts only
    when the import names the package itself)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_package():
    graph = _graph()
    assert "epgkit.method.inner_loop" in graph["epgkit.method.evolve"]
    assert "epgkit.method.losses" in graph["epgkit.method.inner_loop"]
    assert len(graph) > 30


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_a_cycle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAYERS = ("epgkit.method", "epgkit.run", "epgkit.tools")  # each imports only those before it


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downwards(layer):
    above = LAYERS[LAYERS.index(layer) + 1 :]
    upward = sorted(
        f"{name} imports {target}"
        for name, targets in _graph().items()
        if name == layer or name.startswith(layer + ".")
        for target in targets
        if any(target == up or target.startswith(up + ".") for up in above)
    )
    assert upward == []


def _imported_by(modules: str) -> list[str]:
    code = (
        f"import sys, {modules};"
        "print(sorted(m for m in sys.modules if m.startswith(('epgkit.run', 'epgkit.tools'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())


def test_the_method_does_not_import_the_run_machinery():
    # What a Dask worker unpickles (the experiment, inner loops, losses) must not pull in the
    # driver's gin plumbing, run directories or cluster code.
    method = "epgkit.method.evolve, epgkit.method.experiment, epgkit.method.losses"
    assert _imported_by(f"{method}, epgkit.method.policies, epgkit.method.strategies") == []


#: What registering every component may import of the run layer: the clusters (components
#: chosen in gin like a loss), never the driver's gin plumbing, run directories or tools.
DRIVER = ("epgkit.run.config", "epgkit.run.launch", "epgkit.run.rundir", "epgkit.run.train",
          "epgkit.run.sweep", "epgkit.run.resume", "epgkit.tools")  # fmt: skip


def test_registering_the_components_imports_no_driver_code():
    imported = _imported_by("epgkit.components")
    assert "epgkit.run.cluster" in imported
    assert [m for m in imported if m.startswith(DRIVER)] == []


def test_modules_stay_short():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > 330}  # fmt: skip
    assert long == {}
