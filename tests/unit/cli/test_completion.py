"""The CLI's shell completion scripts: bash and zsh offer what the command tree holds, and the
bash script knows every command and option."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from orchestrator.cli.completion import bash_completion, command_specs, zsh_completion


def bash_complete(script: Path, *words: str) -> list[str]:
    """What TAB offers after `words` (the last one is being typed), from the generated script."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"source {script}\nCOMP_WORDS=({quoted})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
               "_orchestrator\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completion_follows_the_command_tree(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "completion", "bash"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "complete -F _orchestrator orchestrator" in done.stdout, done.stderr
    script = tmp_path / "orchestrator.bash"
    script.write_text(done.stdout)
    assert bash_complete(script, "orchestrator", "") == ["node", "migrate-state", "taskdef", "workflowdef", "workflow",
                                                        "cluster", "event", "handler", "completion"]
    assert bash_complete(script, "orchestrator", "--endpoints", "127.0.0.1:1", "workflow", "se") == ["search"]
    assert "--since" in bash_complete(script, "orchestrator", "workflow", "terminate", "--all", "--")
    assert bash_complete(script, "orchestrator", "workflow", "search", "--status", "ti") == ["timed_out"]
    assert bash_complete(script, "orchestrator", "node", "--log-format", "") == ["text", "json"]
    assert bash_complete(script, "orchestrator", "completion", "") == ["bash", "zsh"]
    assert bash_complete(script, "orchestrator", "taskdef", "register", "examples/task_d") == [
        "examples/task_defs.json"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_follows_the_command_tree(tmp_path: Path):
    script = tmp_path / "_orchestrator"
    script.write_text(zsh_completion(build_parser()))
    assert subprocess.run(["zsh", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
    # zsh's completion system replaced by stubs that print what would be offered
    program = f"""
compdef() {{ :; }}
_describe() {{ local -a items; items=("${{(@P)4}}"); print -r -- "${{(j: :)${{(@)items%%:*}}}}"; }}
compadd() {{ shift; print -r -- "${{(@P)1}}"; }}
_files() {{ print -r -- FILES; }}
source {script}
c() {{ words=("$@"); CURRENT=${{#words}}; PREFIX=${{words[CURRENT]}}; _orchestrator; }}
c orchestrator ''
c orchestrator --endpoints x workflow ''
c orchestrator workflow search --status ''
c orchestrator cluster --
c orchestrator workflowdef register ''
"""
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "node migrate-state taskdef workflowdef workflow cluster event handler completion",
        "start get search terminate pause resume retry restart rerun skip signal watch",
        "compensated compensating compensation_failed completed failed paused running terminated timed_out",
        "-h --help",
        "FILES"], done.stdout


def test_completion_knows_every_command_and_option():
    parser = build_parser()
    specs = command_specs(parser)
    assert {"workflow terminate", "workflow search", "cluster status", "node", "completion"} <= set(specs)
    script = bash_completion(parser)
    for path, spec in specs.items():
        assert f'"{path}")' in script
        for flag, _ in spec.options:
            assert flag in script
