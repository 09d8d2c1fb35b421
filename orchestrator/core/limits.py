"""The limits that keep one bad workflow from holding up the others.

Each is checked where a value first appears: at registration when the definition already
says it (the caller gets INVALID_ARGUMENT naming the task and field), otherwise at run time,
where only the task that meets it fails (FAILED_WITH_TERMINAL_ERROR, with a reason saying
which limit and what to do), never the decider itself. The safe expression language keeps its
own limits (`safe_expr.MAX_STEPS`, `MAX_WORK`, ...), which bound one evaluation.
"""

from __future__ import annotations

# ---------------------------------------------------------------- numbers and times

MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600
"""Any duration or delay in a definition (timeouts, delays, WAIT durations, retry delays,
rate-limit windows), and how far ahead a WAIT `until` may be: 10 years. NaN and Infinity are
refused everywhere (Python's json reads NaN/Infinity, YAML reads .nan/.inf)."""

MAX_EPOCH_MS = 253_402_300_799_999
"""The latest literal WAIT `until`, in epoch milliseconds: 9999-12-31T23:59:59.999Z."""

MAX_BACKOFF_SCALE_FACTOR = 1000.0
"""The largest `backoffScaleFactor` of a task definition."""

# ---------------------------------------------------------------- the shape of a definition

MAX_DOCUMENT_DEPTH = 32
"""Levels of lists and objects in a definition document, the outermost object counting as 1.
A protobuf Struct (how the API carries definitions) cannot be decoded beyond about 32 levels,
so a deeper definition could be stored but never read back (and would spoil every listing
that includes it). Checked without recursion, before anything else reads the document."""

MAX_DOCUMENT_NODES = 200_000
"""Values (objects, lists, strings, numbers, ...) in one definition document, counting each
use of a YAML alias again: bounds the work of validating it (a few YAML anchors can otherwise
expand to billions of values)."""

MAX_NESTING_DEPTH = 8
"""How deeply container tasks (FORK_JOIN, FORK_JOIN_DYNAMIC, SWITCH, DO_WHILE) may nest:
a task inside 8 containers is fine, one inside 9 is refused. Each level costs 2 or 3 levels
of the document, so this leaves room under MAX_DOCUMENT_DEPTH for the input templates of
the innermost tasks."""

# ---------------------------------------------------------------- fan-out and loops

MAX_FORK_BRANCHES = 1000
"""Branches of one fork: a FORK_JOIN's `forkTasks` (at registration) and the branches a
FORK_JOIN_DYNAMIC resolves to (at run time: the fork task fails with a reason)."""

MAX_DYNAMIC_FORK = MAX_FORK_BRANCHES
"""The same limit under the name of the run-time check."""

MAX_LOOP_ITERATIONS = 1000
"""The largest `maxIterations` of a DO_WHILE. A DO_WHILE over `items` with more items than
its `maxIterations` fails instead of silently leaving the rest out."""

# ---------------------------------------------------------------- workflows starting workflows

MAX_SUBWORKFLOW_DEPTH = 16
"""How many workflows deep a chain of sub-workflows (and failure workflows) may go: a
workflow already this deep fails its SUB_WORKFLOW task instead of starting a child.
Registration refuses definitions that reach themselves; this stops what it cannot see
(definitions changed later, versions pinned before a cycle closed)."""
