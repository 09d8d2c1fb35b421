"""The boundaries between the parts hold: import rules, a pure core, a worker SDK that ships alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PURE_MODULES = ["orchestrator.core.decider", "orchestrator.core.definitions", "orchestrator.core.apply",
                "orchestrator.core.templates", "orchestrator.core.safe_expr", "orchestrator.core.statuses"]


def test_import_rules_between_the_layers_hold() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_importing_the_core_loads_no_grpc_redis_or_etcd() -> None:
    script = ("import sys\n"
              f"for name in {PURE_MODULES!r}: __import__(name)\n"
              "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
              "{'grpc', 'redis', 'pyetcd', 'google', 'orchestrator_api', 'uvloop'})\n"
              "print(heavy)\n"
              "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_the_worker_sdk_installs_and_imports_without_the_node(tmp_path: Path) -> None:
    """Build the API-stub and SDK wheels, install only those, and import the SDK in an
    interpreter that cannot see the node (no site hooks, so no editable installs)."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    sources = []
    for part in ("proto", "worker"):   # a copy: a build writes build/ and *.egg-info beside the sources
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                                  "*.egg-info"))
        sources.append(str(tmp_path / part))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), *sources],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    built = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert built == ["ha_orchestrator_api", "ha_orchestrator_worker"]
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              *map(str, wheels.glob("*.whl"))], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    # grpcio and protobuf from this environment; nothing of the checkout.
    third_party = sysconfig.get_paths()["purelib"]
    script = ("import sys, worker\n"
              "from worker import Worker, WorkflowClient, task\n"
              "assert worker.__file__.startswith(sys.argv[1]), worker.__file__\n"
              "ours = sorted(m for m in sys.modules if m.split('.')[0] in {'orchestrator', 'devtools', 'redis'})\n"
              "assert not ours, ours\n"
              "try:\n    import orchestrator\nexcept ImportError:\n    print('node absent')\n")
    elsewhere = tmp_path / "elsewhere"   # not beside the copied sources
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-S", "-c", script, str(target)], cwd=elsewhere, capture_output=True,
                            text=True, timeout=60, env={"PYTHONPATH": f"{target}:{third_party}", "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "node absent"
