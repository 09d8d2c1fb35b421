"""The `orchestrator` CLI's parser: its version, and help for every argument and option (the CLI
run against a real node: tests/integration/cli/test_cli.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import orchestrator
from orchestrator.cli import build_parser


def test_version():
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"orchestrator {orchestrator.__version__}"


def _actions(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        yield f"{path} {'/'.join(action.option_strings) or action.dest}", action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")


def test_every_argument_and_option_has_help():
    missing = [where for where, action in _actions(build_parser(), "orchestrator")
               if not isinstance(action, argparse._HelpAction) and not action.help]
    assert missing == []
