"""What a node imports to start: every node start pays for it (a restarted node, `make cluster`, each test
that starts one), 2.2 s of CPU on the 2-core machine before these (1.4 - 1.6 s after, 2026-12-07)."""

from __future__ import annotations

import subprocess
import sys

LATER = {
    "httpx": "the first HTTP task (cluster/http_tasks.py `_ready_client`): httpx and httpcore, with h2 and "
             "httpx's own command line's rich, pygments and click, were 0.4 s",
    "httpcore": "with httpx",
    "pygments": "with httpx",
    "jinja2": "the console's first page (web/app.py `Console.env`): 0.14 s",
    "jwt": "a tokens file that asks for JWTs (core/auth.py `_jwt_rules`): PyJWT loads cryptography, 0.18 s",
}


def test_a_node_imports_what_only_some_nodes_use_when_they_first_use_it() -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import sys, orchestrator.node, orchestrator.cluster.http_tasks; "
                               f"print(' '.join(sorted(m for m in {sorted(LATER)!r} if m in sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True)
    loaded = found.stdout.split()
    assert loaded == [], {name: LATER[name] for name in loaded}
