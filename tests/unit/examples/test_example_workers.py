"""The example, demo and README workers each serve task types of their own, and each set of
definitions is served by its worker."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from helpers import EXAMPLES

ROOT = Path(__file__).resolve().parents[3]


def _served_types(path: Path) -> set[str]:
    """The task types a Python file serves with `@task("...")`."""
    tree = ast.parse(path.read_text())
    served: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "task"
                and node.args and isinstance(node.args[0], ast.Constant)):
            assert isinstance(node.args[0].value, str), ast.dump(node)   # a task type is text
            served.add(node.args[0].value)
    return served


def _readme_snippet_types() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r'@task\("([^"]+)"\)', readme))


def test_example_demo_and_readme_workers_serve_distinct_task_types() -> None:
    """Example, demo and README workers served the same task type with different behaviour (issue 8)."""
    examples = _served_types(EXAMPLES / "example_worker.py")
    demo = _served_types(ROOT / "worker" / "demo.py")
    readme = _readme_snippet_types()
    assert examples and demo and readme
    assert not examples & demo and not examples & readme and not demo & readme
    # and each set of definitions is served by its own worker
    example_defs = {d["name"] for d in json.loads((EXAMPLES / "task_defs.json").read_text())}
    demo_defs = {d["name"] for d in json.loads((ROOT / "deploy" / "demo" / "task_defs.json").read_text())}
    assert example_defs <= examples and demo_defs <= demo
