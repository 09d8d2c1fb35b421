"""uv.lock is what every install uses (the Makefile syncs from it), so it must agree with the
ranges the three pyproject.toml files ask for: a range edited without `make lock` fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _uv() -> str:
    """The uv the Makefile bootstraps (.tools/bin/uv), else one on PATH."""
    bootstrapped = ROOT / ".tools" / "bin" / "uv"
    found = str(bootstrapped) if bootstrapped.exists() else shutil.which("uv")
    assert found, "uv is missing: `make venv` installs it into .tools/"
    return found


def _lock_check(project: Path, *, offline: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_uv(), "lock", "--check", *(["--offline"] if offline else []), "--project", str(project)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})


def test_the_lock_matches_every_pyproject() -> None:
    checked = _lock_check(ROOT)
    assert checked.returncode == 0, checked.stderr


def test_a_range_edited_without_relocking_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a copy of the project whose range moved disagrees with its lock."""
    copy = tmp_path / "project"
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, copy / name)
    for member in ("proto", "worker"):
        (copy / member).mkdir()
        shutil.copy(ROOT / member / "pyproject.toml", copy / member / "pyproject.toml")
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    assert '"rich>=13.7",' in text
    pyproject.write_text(text.replace('"rich>=13.7",', '"rich>=13.8",'))
    checked = _lock_check(copy)
    if "network was disabled" in checked.stderr:
        # a new machine's uv cache holds the locked wheels (`make venv`), not the index pages that
        # resolving the edited range reads: those are read from the registry, once
        checked = _lock_check(copy, offline=False)
    assert checked.returncode != 0
    assert "needs to be updated" in checked.stderr, checked.stderr
