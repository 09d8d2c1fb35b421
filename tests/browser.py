"""Debian's chromium as the console tests drive it: Playwright with `executable_path`, never a
downloaded browser (`make browser` installs it). The `browser` and `page` fixtures are in conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
