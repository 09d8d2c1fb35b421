"""examples/order_flow runs both styles to the end against a real node, and neither loses an
order or leaves stock, money or orders behind under its injected failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def test_the_order_flow_runs_both_ways_and_nothing_is_left_behind(node: Any, tmp_path: Path) -> None:
    output = tmp_path / "order_flow.md"
    done = subprocess.run([sys.executable, "-m", "examples.order_flow", "--endpoints", node.endpoint,
                           "--orders", "30", "--rate", "30", "--output", str(output)],
                          capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-3000:]
    table = output.read_text()
    assert "| orders ended (shipped / undone) | 30 of 30 (27 / 3) | 30 of 30 (27 / 3) |" in table
    assert ("| left behind: orders not finished, stock held by cancelled orders, charged not shipped "
            "| 0, 0, 0 | 0, 0, 0 |") in table
