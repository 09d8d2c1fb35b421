"""`orchestrator completion bash|zsh`: a shell completion script.

Generated from the argparse tree itself, so it cannot drift from the commands: a static script
(no Python started on TAB, no new dependency), completing commands, options, the choices of
options that have them (--status, --log-format, the shells) and file names where files go.
Workflow ids and definition names are not completed: that would mean calling the cluster."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .inputs import STATUS_CHOICES
from .output import EXIT_OK

SHELLS = ("bash", "zsh")
FILE_DESTS = {"files", "config", "trace_file", "archive_dir"}   # options and arguments that name files


def add_completion(commands: Any, root: argparse.ArgumentParser) -> None:
    """The `completion` command; `root` is the parser whose commands its scripts complete."""
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description="Print a completion script for the shell. bash: `source <(orchestrator completion bash)` "
                    "(in ~/.bashrc), or save it as ~/.local/share/bash-completion/completions/orchestrator. "
                    "zsh: save it as _orchestrator in a directory of $fpath (before compinit), or "
                    "`source <(orchestrator completion zsh)` after compinit.")
    completion.add_argument("shell", choices=SHELLS, help="the shell: bash or zsh")
    completion.set_defaults(handler=lambda args: _print_script(root, args.shell))


def _print_script(root: argparse.ArgumentParser, shell: str) -> int:
    print(bash_completion(root) if shell == "bash" else zsh_completion(root), end="")
    return EXIT_OK


@dataclass
class CommandSpec:
    """What may follow one command path: sub-commands, options, and the values some options take."""

    commands: list[tuple[str, str]]
    options: list[tuple[str, str]]
    valued: list[str]                   # options that take a value
    file_options: list[str]             # ... which is a file name
    choices: dict[str, list[str]]       # ... from a fixed list
    files: bool                         # positional file names


def command_specs(parser: argparse.ArgumentParser) -> dict[str, CommandSpec]:
    """Every command path ("", "workflow", "workflow start", ...) and what may follow it."""
    specs: dict[str, CommandSpec] = {}

    def walk(current: argparse.ArgumentParser, path: str) -> None:
        spec = specs[path] = CommandSpec([], [], [], [], {}, False)
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    spec.commands.append((name, helps.get(name, "")))
                    walk(sub, f"{path} {name}".strip())
            elif action.option_strings:
                _add_option(spec, action)
            elif action.dest in FILE_DESTS:
                spec.files = True
            elif action.choices:
                spec.commands.extend((str(choice), "") for choice in action.choices)   # `completion bash|zsh`

    walk(parser, "")
    return specs


def _add_option(spec: CommandSpec, action: argparse.Action) -> None:
    takes_value = action.nargs != 0
    for flag in action.option_strings:
        spec.options.append((flag, action.help or ""))
        if takes_value:
            spec.valued.append(flag)
            if action.dest in FILE_DESTS:
                spec.file_options.append(flag)
            if action.choices:
                spec.choices[flag] = [str(c) for c in action.choices]
            elif action.dest == "status":
                spec.choices[flag] = list(STATUS_CHOICES)


def _words(items: Iterable[str]) -> str:
    return " ".join(items)


def _script(template: str, specs: dict[str, CommandSpec], case: Callable[[CommandSpec], str]) -> str:
    """`template` with a case per command path (`case`: what that path sets) and the values of
    the options that have a fixed list."""
    cases = [f'    "{path}") {case(spec)} ;;' for path, spec in specs.items()]
    choices = [f'    "{path}|{flag}") echo "{_words(values)}" ;;'
               for path, spec in specs.items() for flag, values in spec.choices.items()]
    return template.replace("@CASES@", "\n".join(cases)).replace("@CHOICES@", "\n".join(choices))


def bash_completion(parser: argparse.ArgumentParser) -> str:
    return _script(BASH_TEMPLATE, command_specs(parser), lambda spec: (
        f'cmds="{_words(n for n, _ in spec.commands)}"; opts="{_words(f for f, _ in spec.options)}"; '
        f'valued=" {_words(spec.valued)} "; fileopts=" {_words(spec.file_options)} "; files={int(spec.files)}'))


def _zsh_item(name: str, help_text: str) -> str:
    description = " ".join(help_text.split()).replace("\\", "\\\\").replace(":", "\\:").replace("'", "'\\''")
    return f"'{name}:{description[:100]}'"


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    return _script(ZSH_TEMPLATE, command_specs(parser), lambda spec: (
        f'cmds=({" ".join(_zsh_item(n, h) for n, h in spec.commands)}); '
        f'opts=({" ".join(_zsh_item(f, h) for f, h in spec.options)}); '
        f'valued=({_words(spec.valued)}); fileopts=({_words(spec.file_options)}); files={int(spec.files)}'))


BASH_TEMPLATE = r"""# bash completion for orchestrator (generated by `orchestrator completion bash`)
_orchestrator_spec() {
  case "$1" in
@CASES@
    *) cmds=""; opts=""; valued=" "; fileopts=" "; files=0 ;;
  esac
}

_orchestrator_choices() {
  case "$1|$2" in
@CHOICES@
  esac
}

_orchestrator() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
  local cmdpath="" word i cmds opts valued fileopts files
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="${COMP_WORDS[i]}"
    _orchestrator_spec "$cmdpath"
    if [[ "$valued" == *" $word "* ]]; then
      ((i++))
    elif [[ "$word" != -* && " $cmds " == *" $word "* ]]; then
      cmdpath="${cmdpath:+$cmdpath }$word"
    fi
  done
  _orchestrator_spec "$cmdpath"
  COMPREPLY=()
  if [[ "$valued" == *" $prev "* ]]; then
    local values
    values="$(_orchestrator_choices "$cmdpath" "$prev")"
    if [[ -n "$values" ]]; then
      COMPREPLY=($(compgen -W "$values" -- "$cur"))
    elif [[ "$fileopts" == *" $prev "* ]]; then
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -f -- "$cur"))
    fi
  elif [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -n "$cmds" ]]; then
    COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
  elif ((files)); then
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}

complete -F _orchestrator orchestrator
"""

ZSH_TEMPLATE = r"""#compdef orchestrator
# zsh completion for orchestrator (generated by `orchestrator completion zsh`)
_orchestrator_spec() {
  case "$1" in
@CASES@
    *) cmds=(); opts=(); valued=(); fileopts=(); files=0 ;;
  esac
}

_orchestrator_choices() {
  case "$1|$2" in
@CHOICES@
  esac
}

_orchestrator() {
  local cmdpath="" word i files=0
  local -a cmds opts valued fileopts names values
  for ((i = 2; i < CURRENT; i++)); do
    word="${words[i]}"
    _orchestrator_spec "$cmdpath"
    names=(${cmds%%:*})
    if (( ${valued[(Ie)$word]} )); then
      ((i++))
    elif [[ "$word" != -* ]] && (( ${names[(Ie)$word]} )); then
      cmdpath="${cmdpath:+$cmdpath }$word"
    fi
  done
  _orchestrator_spec "$cmdpath"
  local prev="${words[CURRENT-1]}"
  if (( ${valued[(Ie)$prev]} )); then
    values=(${=$(_orchestrator_choices "$cmdpath" "$prev")})
    if (( ${#values} )); then
      compadd -a values
    elif (( ${fileopts[(Ie)$prev]} )); then
      _files
    fi
  elif [[ "$PREFIX" == -* ]]; then
    _describe -t options 'option' opts
  elif (( ${#cmds} )); then
    _describe -t commands 'command' cmds
  elif (( files )); then
    _files
  fi
}

if [[ "$funcstack[1]" == "_orchestrator" ]]; then
  _orchestrator "$@"
else
  compdef _orchestrator orchestrator
fi
"""
