"""Imports point one way: storage/ and renderers/ import nothing of worker/ or scheduler/,
scheduler/ nothing of worker/, and within worker/ each room only the rooms below it
(runtime < channels < pipeline < cli, api)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ["runtime", "channels", "pipeline", "cli", "api"]  # bottom to top; the doors (cli, api) last


def _imports(path: Path) -> set[str]:
    """Every module name a file imports, at any depth (lazy imports inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["storage", "renderers", "scheduler"])
def test_inner_packages_import_nothing_of_the_service(package):
    forbidden = ("worker",) if package == "scheduler" else ("worker", "scheduler")
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.split(".")[0] in forbidden)
                 for p in _files(package)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_worker_rooms_import_only_rooms_below_them():
    assert sorted(p.name for p in (ROOT / "worker").iterdir() if p.is_dir() and p.name != "__pycache__"
                  and p.name not in ROOMS) == [], "a new room: place it in ROOMS"
    offenders = {}
    for level, room in enumerate(ROOMS):
        # The CLI is the composition root: it may start the API; the API never reaches into the CLI.
        higher = set() if room == "cli" else set(ROOMS[level + 1:])
        for path in _files(f"worker/{room}"):
            bad = sorted(n for n in _imports(path) if n.startswith("worker.") and n.split(".")[1] in higher)
            if bad:
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}
