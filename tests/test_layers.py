"""The layers of DESIGN.md section 3, enforced: a package may import only packages of a
lower layer (or itself). Lazy imports inside functions count too; so no two top-level
packages can import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bottom to top; packages on one line are peers and must not import each other
LAYERS: list[tuple[str, ...]] = [
    ("sdaas",),  # records, errors, config, limits, job-request validation, privacy
    ("profiles",),  # profile data: Parquet I/O, the reference profiles, fitted summaries
    ("scheduler", "models"),  # the scheduling core and simulator; cards, backends, devices
    ("predictor", "engine"),  # features, LightGBM, MLflow, the planner; the device engine
    ("adapters",),  # I/O: Kafka in/out, the embedded broker, the result store, the client
    ("pipelines", "api"),  # Beam pipelines (profiling sweep, serving front); the HTTP API
    ("cli",),  # the command line and the demos
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(root: Path) -> list[str]:
    """Every import that goes sideways or upward, as `file:line: a -> b`."""
    found = []
    for pkg, rank in RANK.items():
        for path in sorted((root / pkg).rglob("*.py")):
            for line, target in imports_of(path):
                if target in RANK and target != pkg and RANK[target] >= rank:
                    found.append(f"{path.relative_to(root)}:{line}: {pkg} -> {target}")
    return found


def test_every_package_is_in_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(RANK)


def test_no_import_goes_up_or_sideways():
    assert violations(ROOT) == []


def test_a_wrong_way_import_is_caught(tmp_path):
    for pkg in RANK:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "models" / "bad.py").write_text(
        "import json\n\n\ndef f():\n    from pipelines.serving import ServeJobs\n"
    )
    (tmp_path / "scheduler" / "peer.py").write_text("from models.card import ModelCard\n")
    (tmp_path / "cli" / "fine.py").write_text("from pipelines import serving\n")
    assert sorted(violations(tmp_path)) == [
        "models/bad.py:5: models -> pipelines",
        "scheduler/peer.py:1: scheduler -> models",
    ]
