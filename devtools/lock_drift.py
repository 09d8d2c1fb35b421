"""Print which installed packages differ from uv.lock: what `make test-latest` tests beyond the lock.

Run with the interpreter of the environment to compare (`.venv-latest/bin/python -m devtools.lock_drift`).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name


def locked_versions(lock_path: Path) -> dict[str, set[str]]:
    """Every registry package pinned in uv.lock, by canonical name (workspace members have no pin).

    A package can be pinned twice, once per range of Python versions, hence a set.
    """
    lock = tomllib.loads(lock_path.read_text())
    pins: dict[str, set[str]] = {}
    for package in lock.get("package", []):
        if "registry" in package.get("source", {}):
            pins.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    return pins


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


NOT_LOCKED = {"pip", "ha-orchestrator", "ha-orchestrator-api", "ha-orchestrator-worker"}


def drift(locked: dict[str, set[str]], installed: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(installed):
        if name in locked and installed[name] not in locked[name]:
            lines.append(f"  {name}: {installed[name]} (uv.lock has {', '.join(sorted(locked[name]))})")
        elif name not in locked and name not in NOT_LOCKED:
            lines.append(f"  {name}: {installed[name]} (not in uv.lock)")
    return lines


def main() -> int:
    lock_path = Path(__file__).resolve().parent.parent / "uv.lock"
    lines = drift(locked_versions(lock_path), installed_versions())
    if lines:
        print(f"testing {len(lines)} package(s) newer than or missing from uv.lock:")
        print("\n".join(lines))
    else:
        print("every installed package is at its uv.lock version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
