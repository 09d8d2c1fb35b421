"""What a node imports to start: every node start pays for it (a restarted node, `make cluster`, each test
that starts one), about 2 s on the 2-core machine (2026-12-07)."""

from __future__ import annotations

import subprocess
import sys


def test_a_node_imports_no_http_client_until_its_first_http_task() -> None:
    """httpx and httpcore (with h2, and httpx's own command line's rich, pygments and click) were 0.4 s
    of it; they are imported by the first HTTP task (cluster/http_tasks.py `_ready_client`)."""
    found = subprocess.run(
        [sys.executable, "-c", "import sys, orchestrator.node, orchestrator.cluster.http_tasks; "
                               "print(sorted(m for m in ('httpx', 'httpcore', 'h2', 'pygments') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr
