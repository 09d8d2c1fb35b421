"""How the console words a workflow's stored reason for a person.

One reason is reworded: a workflow the engine could not decide (an exception in the decider,
`cluster/deciding.py`) is stored with a reason that ends by sending the user to fix the
definition or input. That fault is the server's, not the user's: the console says so, names the
node where it happened when the reason says which, and says that retrying once the fault is
fixed is the way on. Every other reason is shown as stored.
"""

from __future__ import annotations

import re

ENGINE_FAULT = "the engine could not decide it"
_STOPPED = ". This workflow was stopped"
_NODE = re.compile(r"\b(?:on|of) node ([A-Za-z0-9_.:-]+)")   # "... the log of node node-2" (deciding.py)


def is_engine_fault(reason: str) -> bool:
    return ENGINE_FAULT in (reason or "")


def node_of(reason: str) -> str:
    """The node the reason names ("... in the log of node node-2", "... on node node-2"), or ""."""
    found = _NODE.search(reason or "")
    return found.group(1).rstrip(".:") if found else ""


def engine_fault_text(reason: str, retry: bool = True) -> str:
    """The sentence shown for a workflow the engine could not decide (see the module docstring);
    `retry`: the workflow can still be retried (it is stored, not archived)."""
    cause = reason.split(_STOPPED, 1)[0]
    cause = cause.split(ENGINE_FAULT, 1)[1].lstrip(": ").rstrip(". ") if ENGINE_FAULT in cause else cause
    node = node_of(reason)
    where = (f"It happened on node {node}; that node's log has the trace under this workflow's id."
             if node else "The log of the node that decided it has the trace under this workflow's id.")
    return (f"Server-side error: the orchestrator could not decide this workflow"
            f"{f' ({cause})' if cause else ''}. This is a fault in the orchestrator, not in the workflow's "
            f"definition or input, and the workflow was stopped so that it cannot hold up the others. {where} "
            + ("Once the fault is fixed, retry the workflow: it runs on from where it stopped." if retry else
               "Once the fault is fixed, start it again (an archived workflow cannot be retried)."))


def for_people(reason: str, retry: bool = True) -> str:
    """The reason as the console shows it."""
    return engine_fault_text(reason, retry) if is_engine_fault(reason) else reason
