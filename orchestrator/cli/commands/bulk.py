"""An operation on every workflow the filters match (`workflow pause --all --name order`):
find them all first, ask (or take --yes), then run it on each with a progress bar."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any

from rich.text import Text

from ..filters import created
from ..inputs import UsageError
from ..output import EXIT_OK, EXIT_REFUSED, Reply, console
from ..views.search import search_view

PAGE = 1000   # workflows per search call when an operation runs on every match (--all)
Operation = Callable[[Any, argparse.Namespace, str], dict[str, Any]]   # (client, arguments, workflow id)


def on_every_match(client: Any, args: argparse.Namespace, verb: str, past: str, call: Operation,
                   statuses: tuple[str, ...]) -> Reply:
    """Find every workflow the filters match (all pages, before changing any), ask, then run the
    operation on each with a progress bar; one failure does not stop the others."""
    if not (args.name or args.status or args.correlation_id or args.since or args.until):
        raise UsageError(f"--all needs a filter to choose what to {verb}: --name, --status, --correlation-id, "
                         "--since or --until")
    matches = _every_match(client, args, [args.status] if args.status else list(statuses))
    if args.dry_run or not matches:
        note = "" if matches else f"no workflow matches: nothing to {verb}"
        return Reply({"matched": len(matches), "workflows": [w["workflow_id"] for w in matches]}, note=note,
                     view={"matched": len(matches), "workflows": matches})
    refusal = None if args.yes else _refusal(verb, matches)
    if refusal is not None:
        return refusal
    done, failed = _run_on_each(client, args, verb, call, [w["workflow_id"] for w in matches])
    note = f"error: {len(failed)} of {len(matches)} workflows could not be {past}" if failed else ""
    output = {"matched": len(matches), "done": done, "failed": failed}
    return Reply(output, EXIT_REFUSED if failed else EXIT_OK, note, view={**output, "verb": past})


def _every_match(client: Any, args: argparse.Namespace, statuses: list[str]) -> list[dict[str, Any]]:
    since, until = created(args)
    found: dict[str, dict[str, Any]] = {}
    for status in statuses:
        token = ""
        while True:
            page, token = client.search_workflows(name=args.name, status=status, correlation_id=args.correlation_id,
                                                  limit=PAGE, page_token=token, created_from_ms=since,
                                                  created_to_ms=until)
            found.update((w["workflow_id"], w) for w in page)
            if not token:   # a page may be short, even empty, with a token that goes on (a bounded scan)
                break
    return sorted(found.values(), key=lambda w: -int(w.get("created_at_ms") or 0))


def _refusal(verb: str, matches: list[dict[str, Any]]) -> Reply | None:
    """Without --yes: what to print when the operation may not go ahead (None when a person said yes)."""
    if not sys.stdin.isatty():   # no terminal to ask on: --yes is how a script says yes
        return Reply(None, EXIT_REFUSED, f"error: {len(matches)} workflows match; add --yes to {verb} them without "
                                         "being asked (or --dry-run to list them); nothing was done")
    if not _confirmed(verb, matches):
        return Reply(None, EXIT_REFUSED, f"nothing was done: {verb} of {len(matches)} workflows not confirmed")
    return None


def _confirmed(verb: str, matches: list[dict[str, Any]]) -> bool:
    """Ask on the terminal (stderr, stdin)."""
    from rich.prompt import Confirm

    err = console(stderr=True)
    err.print(search_view({"workflows": matches[:10], "next_page_token": ""}))
    if len(matches) > 10:
        err.print(Text(f"... and {len(matches) - 10} more", style="dim"))
    return Confirm.ask(f"{verb.capitalize()} these {len(matches)} workflows?", console=err, default=False)


def _run_on_each(client: Any, args: argparse.Namespace, verb: str, call: Operation,
                 workflow_ids: list[str]) -> tuple[list[str], dict[str, str]]:
    """The workflows the operation was done on, and the error of each it failed on."""
    from worker import ClientError

    done: list[str] = []
    failed: dict[str, str] = {}
    for workflow_id in _progress(f"{verb} {len(workflow_ids)} workflows", workflow_ids):
        try:
            call(client, args, workflow_id)
            done.append(workflow_id)
        except ClientError as exc:
            failed[workflow_id] = str(exc)
    return done, failed


def _progress(label: str, items: list[str]) -> Iterable[str]:
    """`items`, with a progress bar on stderr when it is a terminal."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        for item in items:
            yield item
            progress.advance(task)
