"""examples/example_worker.py runs as a script (python examples/example_worker.py --help)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import EXAMPLES

ROOT = Path(__file__).resolve().parents[3]


def test_the_example_worker_runs_as_a_script() -> None:
    """`examples/example_worker.py` could not run as a script (issue 8)."""
    result = subprocess.run([sys.executable, str(EXAMPLES / "example_worker.py"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--endpoints" in result.stdout
