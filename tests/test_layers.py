"""The layers of DESIGN.md section 3, enforced: a package may import only packages of a
lower layer (or itself). Lazy imports inside functions count too; so no two top-level
packages can import each other in a circle. Inside a package, no modules import each
other in a circle either (lazy, `if TYPE_CHECKING:` and relative imports included)."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# bottom to top; packages on one line are peers and must not import each other
LAYERS: list[tuple[str, ...]] = [
    ("sdaas",),  # records, errors, config, limits, job-request validation, privacy
    ("profiles",),  # profile data: Parquet I/O, the reference profiles, fitted summaries
    ("scheduler", "models"),  # the scheduling core and simulator; cards, backends, devices
    ("predictor",),  # features, LightGBM, MLflow, the planner
    ("adapters",),  # I/O: Kafka in/out, the embedded broker, the result store, the client
    ("engine",),  # the serving runtime: device engines, the core's seam, sinks, calibration
    ("pipelines", "api"),  # Beam pipelines (profiling sweep, serving front); the HTTP API
    ("cli",),  # the command line and the demos
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a file imports, anywhere in it, relative imports
    made absolute; `from a import b` names both `a` and `a.b` (b may be a module)."""
    package = module_name(root, path).split(".")
    if path.name != "__init__.py":
        package.pop()
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) + 1 - node.level] if node.level else []
            base = ".".join([*base, *filter(None, [node.module])])
            out += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def violations(root: Path) -> list[str]:
    """Every import that goes sideways or upward, as `file:line: a -> b`."""
    found = []
    for pkg, rank in RANK.items():
        for path in sorted((root / pkg).rglob("*.py")):
            named = imported_names(root, path)
            for line, target in sorted({(line, name.split(".")[0]) for line, name in named}):
                if target in RANK and target != pkg and RANK[target] >= rank:
                    found.append(f"{path.relative_to(root)}:{line}: {pkg} -> {target}")
    return found


def module_graph(root: Path, pkg: str) -> dict[str, set[str]]:
    """Each module of `pkg` and the modules of `pkg` it imports. A module's own parent
    packages are left out: Python imports those before it anyway, so a package `__init__`
    that imports its own modules makes no cycle."""
    files = {module_name(root, p): p for p in sorted((root / pkg).rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        graph[name] = set()
        for _, target in imported_names(root, path):
            while target and target not in files:  # `a.b.func` -> the module `a.b`
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def shortest_loop(graph: dict[str, set[str]], start: str) -> list[str]:
    """The modules on a shortest import path from `start` back to it ([] if none)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return []


def cycles(root: Path) -> list[str]:
    """The import cycles between modules of one package, as `a.b -> a.c -> a.b`: the
    shortest through each module on one, written from its first module by name."""
    found = set()
    for pkg in RANK:
        graph = module_graph(root, pkg)
        for loop in filter(None, (shortest_loop(graph, m) for m in graph)):
            first = loop.index(min(loop))
            loop = loop[first:] + loop[:first]
            found.add(" -> ".join([*loop, loop[0]]))
    return sorted(found)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An empty package per layer, for planting imports in."""
    for pkg in RANK:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    return tmp_path


def test_every_package_is_in_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(RANK)


def test_no_import_goes_up_or_sideways():
    assert violations(ROOT) == []


def test_a_wrong_way_import_is_caught(tree):
    (tree / "models" / "bad.py").write_text(
        "import json\n\n\ndef f():\n    from pipelines.serving import ServeJobs\n"
    )
    (tree / "scheduler" / "peer.py").write_text("from models.card import ModelCard\n")
    (tree / "cli" / "fine.py").write_text("from pipelines import serving\n")
    assert sorted(violations(tree)) == [
        "models/bad.py:5: models -> pipelines",
        "scheduler/peer.py:1: scheduler -> models",
    ]


def test_no_modules_of_a_package_import_each_other_in_a_circle():
    assert cycles(ROOT) == []


def test_a_cycle_between_modules_is_caught(tree):
    # a lazy `from pkg import mod` one way, a relative import back
    (tree / "models" / "a.py").write_text("def f():\n    from models import b\n")
    (tree / "models" / "b.py").write_text("from .a import f\n")
    # a package __init__, its plugin, and a base module that imports the package for typing
    (tree / "scheduler" / "policies").mkdir()
    (tree / "scheduler" / "policies" / "__init__.py").write_text("from . import fcfs\n")
    (tree / "scheduler" / "policies" / "fcfs.py").write_text("from ..policy import Policy\n")
    (tree / "scheduler" / "policy.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from scheduler import policies\n\n\nclass Policy: ...\n"
    )
    # no cycle: a package __init__ that imports its module, which imports a sibling by way of
    # the package (Python imports a module's packages before it in any case)
    (tree / "engine" / "__init__.py").write_text("from engine.core import run\n")
    (tree / "engine" / "core.py").write_text("from engine import util\n\n\ndef run(): ...\n")
    (tree / "engine" / "util.py").write_text("import json\n")
    assert cycles(tree) == [
        "models.a -> models.b -> models.a",
        "scheduler.policies -> scheduler.policies.fcfs -> scheduler.policy -> scheduler.policies",
    ]
