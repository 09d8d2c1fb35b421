"""The README's developer's map names every package, and names nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
while not (ROOT / "pyproject.toml").exists():   # wherever in tests/ this file lives
    ROOT = ROOT.parent
MAPPED_TREES = ("orchestrator", "worker", "proto", "devtools", "bench", "examples")


def map_entries(readme: str) -> set[str]:
    """Every path the map's block names ('orchestrator/core/kinds/', 'orchestrator/node.py'), nesting read
    from the indentation (two spaces a level)."""
    section = readme.split("## The developer's map", 1)[1]
    block = section.split("```", 2)[1]
    entries: set[str] = set()
    parents: list[str] = []
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if match is None or len(match.group(1)) > 2 * len(parents) + 2:
            continue   # a blank line, or the description's continuation
        level = len(match.group(1)) // 2
        name = match.group(2)
        parents = parents[:level]
        if name.endswith("/") or "." in name:
            entries.add("".join(parents) + name)
        if name.endswith("/"):
            parents.append(name)
    return entries


def packages() -> set[str]:
    """Every Python package of the mapped trees, as 'orchestrator/core/kinds/' (generated code and caches
    left out)."""
    found = set()
    for tree in MAPPED_TREES:
        for init in (ROOT / tree).rglob("__init__.py"):
            folder = init.parent.relative_to(ROOT)
            if "__pycache__" not in folder.parts and not any(part.startswith(".") for part in folder.parts):
                found.add(f"{folder.as_posix()}/")
    return found


def test_the_map_names_every_package() -> None:
    named = map_entries((ROOT / "README.md").read_text())
    missing = sorted(p for p in packages() if p not in named and p != "proto/orchestrator_api/v1/")
    assert not missing, f"packages the README's developer's map does not name: {missing}"


def test_everything_the_map_names_exists() -> None:
    named = map_entries((ROOT / "README.md").read_text())
    assert "orchestrator/core/" in named and "orchestrator/node.py" in named
    absent = sorted(p for p in named if not (ROOT / p).exists())
    assert not absent, f"the README's developer's map names what is not there: {absent}"
