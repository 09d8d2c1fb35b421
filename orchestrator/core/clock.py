"""The clock of every stored time."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock milliseconds (nodes are assumed NTP-synced): what every stored time uses."""
    return int(time.time() * 1000)
