"""`make order-flow` (python -m examples.order_flow) leaves the checkout and /tmp as it found them,
and says what it injected in one line per style instead of a warning per failed delivery (issue 18):
- its table goes to run/order-flow/order_flow.md under the current folder (or --output), never
  over the tracked bench/results/order_flow.md unless asked;
- the throwaway cluster's folder (~60 MB of etcd data) is deleted once the run ends well;
- the injected failures are counted, not logged one by one; any other failure still shows."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PUBLISHED = ROOT / "bench" / "results" / "order_flow.md"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def test_make_order_flow_writes_no_tracked_file_leaves_no_temp_folder_and_sums_up_expected_failures(
        tmp_path: Path) -> None:
    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    published = _digest(PUBLISHED), PUBLISHED.stat().st_mtime_ns if PUBLISHED.exists() else 0
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "examples.order_flow", "--orders", "30", "--rate", "30"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (_digest(PUBLISHED), PUBLISHED.stat().st_mtime_ns if PUBLISHED.exists() else 0) == published
    table = (work / "run" / "order-flow" / "order_flow.md").read_text()
    assert "| orders ended (shipped / undone) | 30 of 30 (27 / 3) | 30 of 30 (27 / 3) |" in table
    assert list(temp.iterdir()) == []
    assert "handler of" not in done.stdout + done.stderr
    assert done.stderr == "", done.stderr
    summaries = [line for line in done.stdout.splitlines() if "expected failures:" in line]
    assert len(summaries) == 2, done.stdout
    assert "3 charges declined" in summaries[0] and "each delivered again" in summaries[1]


def test_a_failure_that_was_not_injected_is_still_logged() -> None:
    code = """
import logging
from examples.order_flow.__main__ import quiet_expected_failures
from examples.order_flow.shop import Unavailable
expected = quiet_expected_failures()
log = logging.getLogger("worker.subscriber")
for exc in (Unavailable("the stock service is down"), KeyError("o-1")):
    log.warning("handler of %s (group %s) failed on event %s (delivery %d): %s: %s; it will be delivered again",
                "of.x.order.created", "stock-service", "1-0", 1, type(exc).__name__, exc)
print(expected.count)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert "KeyError: 'o-1'" in done.stderr and "Unavailable" not in done.stderr
