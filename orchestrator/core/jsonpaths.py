"""Conductor's JSONPath inside `${...}`: deep scans, wildcards, filters, slices and `length()`.

Conductor reads `${ref.output..status}` with Jayway JsonPath (`$.` put in front) over the
document `{workflow: {...}, <ref>: {input, output, ...}}`: a *definite* path (keys and indexes
only) answers the value or null; an *indefinite* one (a deep scan `..`, a wildcard `[*]`, a
filter `[?(...)]`, a slice `[a:b]`) answers a list, empty when nothing matches; a final
`.length()` gives the size of what it follows (for each match of an indefinite path).
`templates.py` reads plain paths (`${ref.output.a[0].b}`, the common case) itself; this module
reads the others, on the `jsonpath-rfc9535` library (RFC 9535, the IETF standard JSONPath).

Why that library. Compared on 30 Jayway-style paths (deep scans, `[*]`, filters with `== != < >
&& ||`, existence, a `$` inside a filter, regex `=~`, slices `[0:2] [-1:] [:2] [2:]`, negative
index, `['a b']`, missing keys, unions) and on speed (compiled once; Python 3.11, 2 cores):

    library (version)       as Jayway  $..status     [*].author   filter      compile  deep scan, 7k nodes
    jsonpath-rfc9535 1.0.1  29/30      25k eval/s    85k/s        28k/s       82 us    7.9 ms
    jsonpath-ng 1.17 (ext)  29/30       9k/s         69k/s        26k/s      515 us   24.7 ms
    python-jsonpath 2.2.2   29/30       6k/s         38k/s        12k/s      158 us   51.2 ms

jsonpath-ng and jsonpath-rfc9535 miss `=~` (refused here anyway, below); python-jsonpath cannot
read `$..missing` (a keyword of its own) and adds syntax of its own (`|`, `&`, `^`, `~`, `#`,
`_`) that would have to be refused. jsonpath-rfc9535 is the fastest, adds nothing to the
standard, and its parsed query is a small tree this module checks (below). 1.x: 2.x is a
rewrite for Python >= 3.12. It is imported on the first JSONPath compiled (about 150 ms, most
of it the `regex` module it loads), so nodes and the CLI that never meet one do not pay it.

How a Jayway path is read. `ref.output..status` becomes `$['ref']['output']..['status']` (keys
in dot notation may hold characters the standard's shorthand does not, such as `-` or a leading
digit; bracketed parts are passed as written) and is evaluated over the whole scope, so a `$`
inside a filter is Conductor's document too (`[?(@.price < $.workflow.input.max)]`).
Differences from Jayway, all refused at registration unless said otherwise: filters take
`== != < <= > >= && || !`, literals and `length(@.x)` (Jayway's `=~`, `in`, `nin`, `size`,
`empty`, `anyof`, ... are not read); a filter on an object tests its member values (the
standard; Jayway tests the object itself: not refused, it answers differently); of Jayway's
path functions only a final `.length()` is read, and it also gives a text's length (Jayway:
null), as the plain paths always have.

Bounds (a path is text from a definition: a hostile one must not hold the decider).
MAX_PATH_CHARS and MAX_NESTING bound the text and the parser's recursion. The work of one
evaluation is linear in the size of the document it reads, which the payload limits bound (1
MiB per output by default; MAX_PAYLOAD_DEPTH keeps it shallow, and the deep scan here walks
without recursion). That holds because of three rules checked when a path is compiled: one
selector per segment (a union such as `[0,0,0]` repeats nodes, and repeats multiply from
segment to segment), at most one deep scan (a second one rescans each subtree once per
ancestor), and the queries inside a filter name one value each (`@.a.b`,
`$.workflow.input.max`: no scans, wildcards or nested filters, so a filter costs the same for
every node it tests). Then every segment yields each node of the document at most once, and a
path of s segments makes at most s passes over it. As a definition may hold many paths, their
work in one decision is also metered (MAX_WORK): the segments are driven here, over the
library's parsed query, with its selectors and its filter evaluation. Regular expressions
(`match()`, `search()`) are refused: one pattern can backtrack for hours on one text, and the
library has no time limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonpath_rfc9535 import JSONPathQuery

__all__ = ["MAX_NESTING", "MAX_PATH_CHARS", "MAX_WORK", "CompiledPath", "PathError", "WorkLimit", "compile_path",
           "evaluate"]

MAX_PATH_CHARS = 512
"""The longest JSONPath read (the text inside `${...}`)."""

MAX_NESTING = 10
"""How deeply brackets and parentheses may nest in one path (the library's parser recurses)."""

MAX_WORK = 500_000
"""Values the JSONPaths resolved in one decision may look at together: a deep scan counts each
list and object below where it starts, a wildcard, slice or filter each member of what it
applies to, a key or index one. Beyond it the decision fails and the workflow ends FAILED
saying so (the engine's answer to any decision it cannot make), after about 1.2 s of one core
at most. A deep scan over a whole 1 MiB output of small objects counts about 260,000 (0.56 s)."""

_METER = "__jsonpath_work__"   # where a scope keeps its meter: no task reference holds '__'

_FILTER_HINT = ("filters take == != < <= > >= && || ! and length(@.x); Jayway's =~, in, nin, size, "
                "empty and anyof are not read")

# A key in dot notation as Jayway reads it: up to the next '.', '[', '(' or blank.
_DOT_KEY = re.compile(r"""[^.\[\]()'"\\\s]+""")


class PathError(ValueError):
    """A JSONPath that cannot be read, or that this orchestrator refuses (with the reason)."""


@dataclass(frozen=True)
class CompiledPath:
    """A compiled JSONPath: its root (`workflow` or a task reference) and first key (`input`,
    `output`, ...), the roots and first keys that `$` queries inside its filters read, and how
    Jayway shapes the answer."""

    root: str
    key: str | None
    definite: bool       # keys and indexes only: the value or None; else a list of matches
    length: bool         # ends in `.length()`
    filter_roots: tuple[tuple[str, str | None], ...] = ()
    query: JSONPathQuery | None = field(default=None, compare=False, repr=False)


def compile_path(text: str) -> CompiledPath:
    """Compile the inside of a `${...}` as Jayway reads it (PathError, one line, when it cannot be
    read or breaks a rule in the module docstring)."""
    text = text.strip()
    if len(text) > MAX_PATH_CHARS:
        raise PathError(f"a JSONPath of {len(text)} characters; at most {MAX_PATH_CHARS} are read")
    standard, length = _to_standard(text)
    import jsonpath_rfc9535 as jp   # here: about 150 ms to import, paid only by a node that meets a JSONPath

    try:
        query = jp.compile(standard)
    except jp.JSONPathError as exc:
        token = getattr(exc, "token", None)
        message = getattr(token, "message", None) or str(exc).split(", line ")[0]
        hint = f" ({_FILTER_HINT})" if "[?" in text.replace(" ", "") else ""
        raise PathError(f"not a JSONPath: {message}{hint}") from None
    except RecursionError:
        raise PathError("a JSONPath nested too deeply") from None
    root, key = _root_and_key(query)
    if root is None:
        raise PathError("begin with 'workflow.', a task reference or '$.' followed by one of them")
    scans, filter_roots = 0, []
    for segment in query.segments:
        if len(segment.selectors) != 1:
            raise PathError("a list of selectors ('[0,1]', \"['a','b']\") is not read: write one path for each")
        if isinstance(segment, jp.segments.JSONPathRecursiveDescentSegment):
            scans += 1
        selector = segment.selectors[0]
        if isinstance(selector, jp.selectors.FilterSelector):
            filter_roots.extend(_filter_roots(selector.expression))
    if scans > 1:
        raise PathError("one deep scan '..' per path at most (each more one rescans every subtree)")
    return CompiledPath(root, key, query.singular_query(), length, tuple(filter_roots), query)


def evaluate(path: CompiledPath, scope: dict[str, Any]) -> Any:
    """What Jayway answers for `path` over `scope` ({"workflow": {...}, "<ref>": {...}}): the
    value or None for a definite path, else the list of matches (empty when none); with
    `.length()`, the length of each (None for what has no length). WorkLimit when the
    JSONPaths resolved over this scope (one decision) together go beyond MAX_WORK."""
    import jsonpath_rfc9535 as jp

    assert path.query is not None
    meter = scope.get(_METER)
    if not isinstance(meter, _Meter):
        meter = scope[_METER] = _Meter()
    try:
        values = _matches(path.query, scope, meter)
    except (jp.JSONPathError, RecursionError):   # Jayway (as Conductor configures it) answers null or []
        values = []
    if path.definite:
        value = values[0] if values else None
        return _length(value) if path.length else value
    return [_length(value) for value in values] if path.length else values


class WorkLimit(ValueError):
    """The JSONPaths of one decision touched more than MAX_WORK values."""


class _Meter:
    """The work left to the JSONPaths resolved over one scope (one decision)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_WORK

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise WorkLimit(f"the JSONPath expressions (deep scans, wildcards, filters) of one step of this workflow "
                            f"went over {MAX_WORK} values of its data (limits: jsonpaths.MAX_WORK); name the values "
                            "with plain paths, or scan smaller outputs")


def _matches(query: JSONPathQuery, scope: dict[str, Any], meter: _Meter) -> list[Any]:
    """The values `query` selects, each segment in turn over the whole node list (one selector
    per segment, checked when compiled), `meter` charged for every value looked at."""
    import jsonpath_rfc9535 as jp

    nodes = [jp.JSONPathNode(value=scope, location=(), parent=None, root=scope)]
    for segment in query.segments:
        selector = segment.selectors[0]
        if isinstance(segment, jp.segments.JSONPathRecursiveDescentSegment):
            nodes = _descendants(nodes, meter)
        one = isinstance(selector, (jp.selectors.NameSelector, jp.selectors.IndexSelector))
        found: list[Any] = []
        for node in nodes:
            value = node.value
            meter.spend(len(value) if not one and isinstance(value, (dict, list)) else 1)
            found.extend(selector.resolve(node))
        nodes = found
    return [node.value for node in nodes]


def _descendants(nodes: list[Any], meter: _Meter) -> list[Any]:
    """Each node and the lists and objects below it, depth first, a node before its children
    (the order of Jayway's deep scan); without recursion."""
    out: list[Any] = []
    for start in nodes:
        stack = [start]
        while stack:
            node = stack.pop()
            out.append(node)
            value = node.value
            items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
            children = [node.new_child(child, key, node) for key, child in items if isinstance(child, (dict, list))]
            meter.spend(1)
            stack.extend(reversed(children))
    return out


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (list, dict, str)) else None


def _to_standard(text: str) -> tuple[str, bool]:
    """Jayway's text as RFC 9535 text, and whether it ends in `.length()`. Keys in dot notation
    become `['key']`; a bracketed part is passed as written (its nesting bounded)."""
    if text.startswith("@"):
        raise PathError("'@' is for filters: begin with 'workflow.', a task reference or '$.'")
    rest = text[1:] if text.startswith("$") else "." + text   # Jayway puts '$.' in front of the others
    out, position, length = ["$"], 0, False
    while position < len(rest):
        char = rest[position]
        if char.isspace():
            position += 1
            continue
        if length:
            raise PathError("'.length()' ends a path: nothing may follow it")
        if char == "[":
            end = _bracket_end(rest, position)
            out.append(rest[position:end])
            position = end
            continue
        if char != ".":
            raise PathError(f"expected '.', '..' or '[' at '{rest[position:position + 20]}'")
        deep = rest.startswith("..", position)
        position += 2 if deep else 1
        if rest.startswith("[", position):
            out.append(".." if deep else "")
            continue
        if rest.startswith("*", position):
            out.append("..*" if deep else "[*]")
            position += 1
            continue
        key = _DOT_KEY.match(rest, position)
        if not key:
            raise PathError(f"a '.' must be followed by a key, '*' or '[' (at '{rest[position - 1:position + 19]}'); "
                            "write a key with quotes or blanks as ['a key']")
        position = key.end()
        if rest.startswith("(", position):
            if key.group() != "length" or deep or not rest.startswith("()", position):
                raise PathError(f"'{key.group()}(...)': of Jayway's path functions only a final .length() is read")
            length, position = True, position + 2
            continue
        out.append(f"{'..' if deep else ''}['{key.group()}']")
    return "".join(out), length


def _bracket_end(text: str, start: int) -> int:
    """The position after the ']' closing the '[' at `start` (quotes respected); PathError when
    it is not closed or nests beyond MAX_NESTING."""
    depth, quote, position = 0, "", start
    while position < len(text):
        char = text[position]
        if quote:
            if char == "\\":
                position += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
            if depth > MAX_NESTING:
                raise PathError(f"brackets and parentheses nested more than {MAX_NESTING} deep")
        elif char in "])":
            depth -= 1
            if depth == 0:
                if char != "]":
                    break
                return position + 1
        position += 1
    raise PathError(f"a '[' that is not closed as it should be: '{text[start:start + 30]}'")


def _root_and_key(query: JSONPathQuery) -> tuple[str | None, str | None]:
    """The names of the first two segments of a query, each when it is a single key."""
    import jsonpath_rfc9535 as jp

    names: list[str | None] = []
    for segment in query.segments[:2]:
        selector = segment.selectors[0] if len(segment.selectors) == 1 else None
        child = isinstance(segment, jp.segments.JSONPathChildSegment)
        names.append(selector.name if child and isinstance(selector, jp.selectors.NameSelector) else None)
    names += [None] * (2 - len(names))
    return names[0], names[1]


def _filter_roots(expression: Any) -> list[tuple[str, str | None]]:
    """Check a filter (module docstring: one value per query, only length()) and list the
    roots and first keys its `$` queries read."""
    import jsonpath_rfc9535.filter_expressions as fx

    if isinstance(expression, fx.FilterExpression):
        return _filter_roots(expression.expression)
    if isinstance(expression, (fx.LogicalExpression, fx.ComparisonExpression)):
        return _filter_roots(expression.left) + _filter_roots(expression.right)
    if isinstance(expression, fx.PrefixExpression):
        return _filter_roots(expression.right)
    if isinstance(expression, fx.FilterExpressionLiteral):
        return []
    if isinstance(expression, fx.FunctionExtension):
        if expression.name != "length":
            raise PathError(f"{expression.name}() is not read in a filter, only length(): regular expressions "
                            "(match, search) are left out, one pattern can run for hours on one text")
        return [root for argument in expression.args for root in _filter_roots(argument)]
    if isinstance(expression, (fx.RelativeFilterQuery, fx.RootFilterQuery)):
        if not expression.query.singular_query():
            raise PathError(f"'{expression}' in a filter: a query there names one value ('@.a.b', '@[0]', "
                            "'$.workflow.input.x'), without wildcards, deep scans, slices or filters")
        if isinstance(expression, fx.RootFilterQuery):
            root, key = _root_and_key(expression.query)
            if root is None:
                raise PathError(f"'{expression}' in a filter: a '$' query there begins with 'workflow' or a task "
                                "reference ('$.workflow.input.x')")
            return [(root, key)]
        return []
    raise PathError(f"'{expression}' is not read in a filter ({_FILTER_HINT})")
