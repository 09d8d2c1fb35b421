"""A small, safe expression language for SWITCH, DO_WHILE and INLINE tasks.

No user text ever reaches Python's eval, exec or compile, and no attribute is ever
looked up by name: a hand-written tokenizer feeds a recursive-descent parser (a
precedence loop for binary operators) that builds closures over JSON values.

    expression := binary ('?' expression ':' expression)?         right-associative
    binary     := unary (OP unary)*    || < && < == != === !== < < <= > >= < + - < * / %
    unary      := ('!' | '-') unary | postfix
    postfix    := primary ('.' NAME | '[' expression ']')*
    primary    := NUMBER | 'string' | "string" | true | false | null | '$' | NAME '(' args ')'
                | '(' expression ')' | '[' args ']' | '{' (NAME | STRING) ':' expression, ... '}'

- `$` is the root value given to `evaluate`. `.name` and `[key]` read a dict key, a
  list element or a character (non-negative whole index); anything missing is null,
  never an error. `.length` is the length of a string, list or dict (a dict's own
  "length" key wins). There are no methods, so `$.__class__` is just a missing key.
- Falsy: null, false, 0, '', [] and {} (JavaScript plus empty containers). `!`, `&&`
  and `||` return booleans; `&&`, `||` and `?:` evaluate only what they need.
- `==` and `===` (`!=`, `!==`) are strict JSON equality: 1 == 1.0, 1 != true, '1' != 1,
  lists and objects by content. `<` `<=` `>` `>=` take two numbers or two strings.
- `+` adds numbers, concatenates two lists, or, if either side is a string, joins the
  texts (null, true, 3 for 3.0, compact JSON for lists and objects). `-` `*` `/` `%`
  take numbers; `/` of integers that divide exactly is an integer; `%` keeps the
  dividend's sign as in JavaScript; dividing by zero is an error; numbers stay finite.
- Functions: len min max abs round floor ceil lower upper contains keys sum str num
  exists (see `_BUILTINS`); `round` rounds halves away from zero.

Limits, each named in its error: MAX_SOURCE_CHARS of source; MAX_DEPTH levels of
nesting, where every parenthesis, bracket, brace, argument, right-hand operand, unary
operator and ternary branch goes one level deeper; MAX_STEPS node visits per
evaluation; MAX_WORK units of work on data per evaluation; MAX_STRING_CHARS per string
and MAX_LIST_ITEMS per list built. SafeExpressionError comes at compile time for syntax
errors, unknown functions and argument counts, and at evaluation time for type errors
and limits.

Work on data: a node visit is one step, but one step of `sum($.items)`, `$.a == $.b`,
`contains`, `keys`, `str`, `min`, `max`, `+` or `<` may go through a whole list or string.
So each of these also spends work, before it starts wherever the size is known: one unit
per list item or object entry it goes through one by one (deep equality, `str` and
`contains` go all the way down), one per ITEMS_PER_UNIT list items or keys it copies in
bulk (list `+`, `keys`) and one per CHARS_PER_UNIT characters it scans or copies (string
comparison and concatenation, `lower` and `upper`, which cost more for text that is not
ASCII). `len`, `.length`, `exists` and indexing cost nothing extra. A unit is about a
microsecond at most. With MAX_STEPS this bounds
every evaluation, over any input, to a few tens of milliseconds, and the text and lists an
expression can build to about MAX_WORK * CHARS_PER_UNIT characters or items in all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import lru_cache
from typing import Any, NoReturn
from collections.abc import Callable

MAX_SOURCE_CHARS = 4096
MAX_DEPTH = 64
MAX_STEPS = 10_000
MAX_WORK = 50_000
ITEMS_PER_UNIT = 32
CHARS_PER_UNIT = 256
MAX_STRING_CHARS = 1024 * 1024
MAX_LIST_ITEMS = 100_000


class SafeExpressionError(ValueError):
    """A syntax, type or limit problem; `column` (1-based) says where, when known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message if column is None else f"at column {column}: {message}")
        self.column = column


class _Fault(Exception):
    """A problem found by a value helper; the node that called it adds the column."""


# ------------------------------------------------------------------ tokens

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<num>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>===|!==|==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}$])
""", re.VERBOSE | re.ASCII | re.DOTALL)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
_KEYWORDS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "str", "name", "op" or "end"
    text: str
    col: int
    value: Any = None

    def describe(self) -> str:
        return "end of expression" if self.kind == "end" else repr(self.text[:20])

    def is_op(self, *texts: str) -> bool:
        return self.kind == "op" and self.text in texts


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            problem = "string is not closed" if source[pos] in "'\"" else f"unexpected character {source[pos]!r}"
            raise SafeExpressionError(problem, pos + 1)
        if match.lastgroup != "space":
            tokens.append(_token(match))
        pos = match.end()
    return tokens + [_Token("end", "", len(source) + 1)]


def _token(match: re.Match[str]) -> _Token:
    kind, text, col = str(match.lastgroup), match.group(), match.start() + 1
    if kind == "num":
        try:
            return _Token(kind, text, col, _parse_number(text))
        except _Fault as fault:
            raise SafeExpressionError(str(fault), col) from None
    if kind == "str":
        return _Token(kind, text, col, _unescape(text[1:-1], col + 1))
    return _Token(kind, text, col)


def _unescape(body: str, col: int) -> str:
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        if code not in _ESCAPES:
            raise SafeExpressionError(f"unknown escape '\\{code}' in string", col + match.start())
        return _ESCAPES[code]
    return _ESCAPE.sub(replace, body)


# ------------------------------------------------------------------ values

_KINDS = (("boolean", bool), ("number", (int, float)), ("string", str), ("list", list), ("object", dict))
_KIND_OF_TYPE = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "list",
                 dict: "object"}
_SCALAR_TYPES = frozenset({int, float, bool, type(None)})   # strict equality is Python's within one of these
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _kind(value: Any) -> str:
    kind = _KIND_OF_TYPE.get(type(value))   # the exact JSON types, at once; subclasses below
    if kind is not None:
        return kind
    return next((kind for kind, types in _KINDS if isinstance(value, types)), "unsupported value")


def _is_number(value: Any) -> bool:
    return _kind(value) == "number"


def _truthy(value: Any) -> bool:
    if isinstance(value, (str, list, dict)):
        return len(value) > 0
    return value is not None and value is not False and value != 0


def _finite(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise _Fault("number out of range (not finite)")
    if isinstance(value, int) and value.bit_length() > 1023:
        raise _Fault("number out of range (beyond 2**1023)")
    return value


def _parse_number(text: str) -> int | float:
    return _finite(float(text) if any(c in text for c in ".eE") else int(text))


def _check_length(kind: str, length: int) -> None:
    limit, unit = (MAX_STRING_CHARS, "characters") if kind == "string" else (MAX_LIST_ITEMS, "items")
    if length > limit:
        raise _Fault(f"{kind} longer than the limit of {limit} {unit}")


def _sized(value: Any) -> Any:
    """A string or list built here, refused if longer than its limit."""
    _check_length(_kind(value), len(value))
    return value


def _equal(scope: _Scope, a: Any, b: Any) -> bool:
    """Strict JSON equality; spends one unit per list or object and per item or entry compared."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "list":
        if len(a) != len(b):
            return False
        scope.spend(1 + len(a))
        return all(_same(scope, x, y) for x, y in zip(a, b))
    if kind == "object":
        if len(a) != len(b):
            return False
        scope.spend(1 + len(a))
        return a.keys() == b.keys() and all(_same(scope, x, b[key]) for key, x in a.items())
    if kind == "string":
        scope.bulk(min(len(a), len(b)))
    return bool(a == b)


def _same(scope: _Scope, a: Any, b: Any) -> bool:
    """`_equal`, quicker for scalars (Python's == is strict between two values of one type)."""
    kind = type(a)
    if kind is type(b):
        if kind in _SCALAR_TYPES:
            return bool(a == b)
        if kind is str:
            if len(a) >= CHARS_PER_UNIT and len(b) >= CHARS_PER_UNIT:
                scope.bulk(min(len(a), len(b)))
            return bool(a == b)
    elif kind in _KIND_OF_TYPE and type(b) in _KIND_OF_TYPE and _KIND_OF_TYPE[kind] != _KIND_OF_TYPE[type(b)]:
        return False   # two plain JSON values of different kinds (an int and a float are one kind)
    return _equal(scope, a, b)


def _member(value: Any, key: Any) -> Any:
    """`value.key` or `value[key]`: a dict key, a list element or a character; else null."""
    if isinstance(value, dict):
        key = _number_key(key) if _is_number(key) else key
        if isinstance(key, str) and key in value:
            return value[key]
        return len(value) if key == "length" else None
    if isinstance(value, (list, str)):
        if key == "length":
            return len(value)
        whole = isinstance(key, int) or (isinstance(key, float) and key.is_integer())
        if _is_number(key) and whole and 0 <= key < len(value):
            return value[int(key)]
    return None


def _number_key(value: int | float) -> str | None:
    """A number as an object key, as `str` writes it; None (no key) for one that is not finite."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    try:
        return _JSON.encode(value)
    except ValueError:
        return None


def _text(scope: _Scope, value: Any) -> str:
    """A string as itself, a whole float without its '.0', anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    parts, size = [], 0
    try:
        for chunk in _JSON.iterencode(value):  # streamed, so a huge value stops at the limit
            size += len(chunk)
            _check_length("string", size)
            scope.spend(1 + len(chunk) // CHARS_PER_UNIT)
            parts.append(chunk)
    except (TypeError, ValueError):
        raise _Fault(f"cannot turn {_kind(value)} into text") from None
    return "".join(parts)


# ------------------------------------------------------------------ operators

_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "===": 3, "!==": 3,
               "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}


def _binary(scope: _Scope, op: str, a: Any, b: Any) -> Any:
    """Every binary operator except the short-circuit ones."""
    if op in ("==", "===", "!=", "!=="):
        return _equal(scope, a, b) == (op in ("==", "==="))
    if op in _ORDER:
        if isinstance(a, str) and isinstance(b, str):
            scope.bulk(min(len(a), len(b)))
            return _ORDER[op](a, b)
        if _is_number(a) and _is_number(b):
            return _ORDER[op](a, b)
        raise _Fault(f"'{op}' compares two numbers or two strings, got {_kind(a)} and {_kind(b)}")
    if op == "+" and not (_is_number(a) and _is_number(b)):
        return _concatenate(scope, a, b)
    return _arithmetic(op, a, b)


def _concatenate(scope: _Scope, a: Any, b: Any) -> Any:
    if isinstance(a, str) or isinstance(b, str):
        left, right = _text(scope, a), _text(scope, b)
        _check_length("string", len(left) + len(right))   # before building it
        scope.bulk(len(left) + len(right))
        return left + right
    if isinstance(a, list) and isinstance(b, list):
        _check_length("list", len(a) + len(b))
        scope.bulk(len(a) + len(b), ITEMS_PER_UNIT)
        return a + b
    raise _Fault(f"'+' needs two numbers, two lists or a string, got {_kind(a)} and {_kind(b)}")


def _arithmetic(op: str, a: Any, b: Any) -> int | float:
    if not (_is_number(a) and _is_number(b)):
        raise _Fault(f"'{op}' needs two numbers, got {_kind(a)} and {_kind(b)}")
    if op in "/%" and b == 0:
        raise _Fault("division by zero")
    integers = isinstance(a, int) and isinstance(b, int)
    if op == "+":
        return _finite(a + b)
    if op == "-":
        return _finite(a - b)
    if op == "*":
        return _finite(a * b)
    if op == "/":
        return _finite(a // b if integers and a % b == 0 else a / b)
    return abs(a) % abs(b) * (1 if a >= 0 else -1) if integers else math.fmod(a, b)


def _negate(value: Any) -> int | float:
    if not _is_number(value):
        raise _Fault(f"'-' needs a number, got {_kind(value)}")
    return _finite(-value)


# ------------------------------------------------------------------ functions

_DECIMAL = Context(prec=60)


def _need(name: str, value: Any, *kinds: str) -> Any:
    """`value` if it is one of `kinds`, else a fault such as "keys() needs an object, got list"."""
    if _kind(value) not in kinds:
        wanted = ", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]
        article = "an" if wanted[0] in "aeiou" else "a"
        raise _Fault(f"{name}() needs {article} {wanted}, got {_kind(value)}")
    return value


def _extreme(name: str, pick: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    """min or max of the arguments, or of the items of a single list argument."""
    def run(scope: _Scope, *args: Any) -> Any:
        items = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        scope.spend(len(items))
        if not items or not (all(_is_number(i) for i in items) or all(isinstance(i, str) for i in items)):
            raise _Fault(f"{name}() needs one or more numbers, or one or more strings")
        if isinstance(items[0], str):
            scope.bulk(sum(map(len, items)))
        return pick(items)
    return run


def _round(scope: _Scope, value: Any, digits: Any = 0) -> int | float:
    _need("round", value, "number")
    if not (_is_number(digits) and digits in range(16)):
        raise _Fault("round() takes a whole number of digits from 0 to 15")
    if isinstance(value, int) or abs(value) >= 1e15:  # no fraction left to round
        return int(value) if digits == 0 else value
    exponent = Decimal(1).scaleb(-int(digits))
    rounded = Decimal(repr(value)).quantize(exponent, rounding=ROUND_HALF_UP, context=_DECIMAL)
    return int(rounded) if digits == 0 else float(rounded)


def _contains(scope: _Scope, container: Any, item: Any) -> bool:
    if isinstance(_need("contains", container, "list", "string"), str):
        if not isinstance(item, str):
            return False
        scope.bulk(len(container))
        return item in container
    scope.spend(len(container))
    return any(_same(scope, x, item) for x in container)


def _sum(scope: _Scope, items: Any) -> int | float:
    scope.spend(len(_need("sum", items, "list")))
    if not all(_is_number(i) for i in items):
        raise _Fault("sum() needs a list of numbers only")
    return _finite(sum(items))


def _keys(scope: _Scope, value: Any) -> list[str]:
    scope.bulk(len(_need("keys", value, "object")), ITEMS_PER_UNIT)
    return list(value)


def _case(name: str, change: Callable[[str], str]) -> Callable[[_Scope, Any], str]:
    """lower() or upper()."""
    def run(scope: _Scope, value: Any) -> str:
        scope.bulk(len(_need(name, value, "string")), CHARS_PER_UNIT if value.isascii() else 16)
        return str(_sized(change(value)))
    return run


def _num(scope: _Scope, value: Any) -> int | float:
    if _is_number(_need("num", value, "number", "string")):
        return _finite(value)
    scope.bulk(len(value))
    text = value.strip()
    if len(text) > 400 or not _NUMBER.fullmatch(text):
        raise _Fault(f"num() cannot read {value[:40]!r} as a number")
    return _parse_number(text)


# name: (fewest arguments, most arguments or None for no limit, function of (scope, *arguments))
_BUILTINS: dict[str, tuple[int, int | None, Callable[..., Any]]] = {
    "len": (1, 1, lambda _, x: len(_need("len", x, "string", "list", "object"))),
    "min": (1, None, _extreme("min", min)),
    "max": (1, None, _extreme("max", max)),
    "abs": (1, 1, lambda _, x: abs(_need("abs", x, "number"))),
    "round": (1, 2, _round),
    "floor": (1, 1, lambda _, x: math.floor(_need("floor", x, "number"))),
    "ceil": (1, 1, lambda _, x: math.ceil(_need("ceil", x, "number"))),
    "lower": (1, 1, _case("lower", str.lower)),
    "upper": (1, 1, _case("upper", str.upper)),
    "contains": (2, 2, _contains),
    "keys": (1, 1, _keys),
    "sum": (1, 1, _sum),
    "str": (1, 1, _text),
    "num": (1, 1, _num),
    "exists": (1, 1, lambda _, x: x is not None),
}


# ------------------------------------------------------------------ tree
# The parser turns each node into a closure that takes the evaluation's _Scope.

_Run = Callable[["_Scope"], Any]


class _Scope:
    """One evaluation: the root value `$`, the count of node visits and the work done on data."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.steps = 0
        self.work = 0

    def tick(self, col: int) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SafeExpressionError(f"evaluation took more than the limit of {MAX_STEPS} steps", col)

    def spend(self, units: int) -> None:
        """Work on data (see the module docstring); a fault once past MAX_WORK."""
        self.work += units
        if self.work > MAX_WORK:
            raise _Fault(f"evaluation goes through too much data: more than the limit of {MAX_WORK} units of work "
                         f"(about one per list item or object entry, or per {CHARS_PER_UNIT} characters); give the "
                         "task less data or do this in a worker")

    def bulk(self, length: int, per_unit: int = CHARS_PER_UNIT) -> None:
        """Characters (or, with ITEMS_PER_UNIT, list items) scanned or copied in bulk."""
        self.spend(length // per_unit)


def _apply(col: int, function: Callable[..., Any], *args: Any) -> Any:
    """Run a value helper; its complaint becomes an SafeExpressionError at `col`."""
    try:
        return function(*args)
    except _Fault as fault:
        raise SafeExpressionError(str(fault), col) from None
    except OverflowError:
        raise SafeExpressionError("number out of range", col) from None


def _constant(col: int, value: Any) -> _Run:
    def run(scope: _Scope) -> Any:
        scope.tick(col)
        return value
    return run


def _root(col: int) -> _Run:
    def run(scope: _Scope) -> Any:
        scope.tick(col)
        return scope.root
    return run


def _array(col: int, items: list[_Run]) -> _Run:
    def run(scope: _Scope) -> list[Any]:
        scope.tick(col)
        return [item(scope) for item in items]
    return run


def _object(col: int, fields: list[tuple[str, _Run]]) -> _Run:
    def run(scope: _Scope) -> dict[str, Any]:
        scope.tick(col)
        return {key: item(scope) for key, item in fields}
    return run


def _path(col: int, base: _Run, keys: list[_Run]) -> _Run:
    def run(scope: _Scope) -> Any:
        scope.tick(col)
        value = base(scope)
        for key in keys:
            value = _member(value, key(scope))
        return value
    return run


def _unary(col: int, op: str, operand: _Run) -> _Run:
    def run(scope: _Scope) -> Any:
        scope.tick(col)
        value = operand(scope)
        return not _truthy(value) if op == "!" else _apply(col, _negate, value)
    return run


def _chain(first: _Run, rest: list[tuple[str, int, _Run]]) -> _Run:
    """`first`, then each (operator, column, operand) folded in from the left.

    The parser has already made tighter operators into operands, so a * b + c < d
    arrives as a, [(*, b), (+, c), (<, d)]. `&&` and `||` skip their operand once
    the answer is known.
    """
    def run(scope: _Scope) -> Any:
        scope.tick(rest[0][1])
        value = first(scope)
        for op, col, operand in rest:
            if op in ("&&", "||"):
                value = _truthy(value)
                if value == (op == "&&"):
                    value = _truthy(operand(scope))
            else:
                value = _apply(col, _binary, scope, op, value, operand(scope))
        return value
    return run


def _conditional(col: int, test: _Run, then: _Run, other: _Run) -> _Run:
    def run(scope: _Scope) -> Any:
        scope.tick(col)
        return (then if _truthy(test(scope)) else other)(scope)
    return run


def _call(col: int, function: Callable[..., Any], args: list[_Run]) -> _Run:
    def run(scope: _Scope) -> Any:
        scope.tick(col)
        return _apply(col, function, scope, *[arg(scope) for arg in args])
    return run


# ------------------------------------------------------------------ parser

class _Parser:
    """Recursive descent over the grammar in the module docstring."""

    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.pos = 0
        self.depth = 0

    def parse(self) -> _Run:
        tree = self.expression()
        if self.peek().kind != "end":
            self.fail("an operator or the end")
        return tree

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += token.kind != "end"
        return token

    def accept(self, op: str) -> bool:
        if not self.peek().is_op(op):
            return False
        self.pos += 1
        return True

    def expect(self, op: str) -> None:
        if not self.accept(op):
            self.fail(repr(op))

    def fail(self, wanted: str, token: _Token | None = None) -> NoReturn:
        token = token or self.peek()
        raise SafeExpressionError(f"expected {wanted} but found {token.describe()}", token.col)

    def descend(self, col: int) -> None:
        """One level deeper in the tree being built. Every recursion of the parser and
        of the evaluation passes through here, so the limit keeps both far below
        Python's recursion limit."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SafeExpressionError(f"expression nested deeper than the limit of {MAX_DEPTH} levels", col)

    def expression(self) -> _Run:
        test = self.binary(0)
        question = self.peek()
        if not self.accept("?"):
            return test
        self.descend(question.col)
        then = self.expression()
        self.expect(":")
        other = self.expression()
        self.depth -= 1
        return _conditional(question.col, test, then, other)

    def precedence(self) -> int:
        token = self.peek()
        return _PRECEDENCE.get(token.text, 0) if token.kind == "op" else 0

    def binary(self, floor: int) -> _Run:
        """Operands joined by operators binding tighter than `floor` (Pratt's loop)."""
        entry = self.depth
        self.descend(self.peek().col)
        first, rest = self.unary(), []
        while (level := self.precedence()) > floor:
            op = self.take()
            rest.append((op.text, op.col, self.binary(level)))
        self.depth = entry
        return _chain(first, rest) if rest else first

    def unary(self) -> _Run:
        token = self.peek()
        if not token.is_op("!", "-"):
            return self.postfix()
        self.take()
        self.descend(token.col)
        operand = self.unary()
        self.depth -= 1
        return _unary(token.col, token.text, operand)

    def postfix(self) -> _Run:
        col = self.peek().col
        base, keys = self.primary(), []
        while self.peek().is_op(".", "["):
            if self.take().text == "[":
                keys.append(self.expression())
                self.expect("]")
            elif self.peek().kind == "name":
                keys.append(_constant(self.peek().col, self.take().text))
            else:
                self.fail("a property name after '.'")
        return _path(col, base, keys) if keys else base

    def primary(self) -> _Run:
        token = self.take()
        if token.kind in ("num", "str"):
            return _constant(token.col, token.value)
        if token.kind == "name":
            return self.name(token)
        if token.is_op("$"):
            return _root(token.col)
        if token.is_op("("):
            inner = self.expression()
            self.expect(")")
            return inner
        if token.is_op("["):
            return _array(token.col, self.separated("]", self.expression))
        if token.is_op("{"):
            return _object(token.col, self.separated("}", self.field))
        self.fail("a value", token)

    def name(self, token: _Token) -> _Run:
        if token.text in _KEYWORDS:
            return _constant(token.col, _KEYWORDS[token.text])
        if token.text not in _BUILTINS:
            what = "function" if self.peek().is_op("(") else "name"
            raise SafeExpressionError(f"unknown {what} {token.text!r} (read input as $.{token.text}; "
                                  f"functions are {', '.join(sorted(_BUILTINS))})", token.col)
        self.expect("(")
        args = self.separated(")", self.expression)
        least, most, function = _BUILTINS[token.text]
        if not least <= len(args) <= (len(args) if most is None else most):
            count = f"{least}" if most == least else f"at least {least}" if most is None else f"{least} or {most}"
            raise SafeExpressionError(f"{token.text}() takes {count} argument(s), got {len(args)}", token.col)
        return _call(token.col, function, args)

    def separated(self, closer: str, parse_one: Callable[[], Any]) -> list[Any]:
        """Comma-separated items up to `closer` (a trailing comma is fine)."""
        items: list[Any] = []
        while not self.accept(closer):
            items.append(parse_one())
            if not self.accept(","):
                self.expect(closer)
                break
        return items

    def field(self) -> tuple[str, _Run]:
        if self.peek().kind not in ("name", "str"):
            self.fail("a property name")
        key = self.take()
        self.expect(":")
        return (key.value if key.kind == "str" else key.text), self.expression()


# ------------------------------------------------------------------ public API

@dataclass(frozen=True)
class Compiled:
    """A parsed expression: compile once (at definition registration), evaluate often.

    `Compiled(source)` parses at once and raises SafeExpressionError on a syntax error.
    """

    source: str
    _run: _Run = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise SafeExpressionError(f"an expression must be text, got {type(self.source).__name__}")
        if len(self.source) > MAX_SOURCE_CHARS:
            raise SafeExpressionError(f"expression is {len(self.source)} characters long, "
                                  f"over the limit of {MAX_SOURCE_CHARS}")
        try:
            object.__setattr__(self, "_run", _Parser(self.source).parse())
        except RecursionError:  # MAX_DEPTH keeps this to callers already deep in their own stack
            raise SafeExpressionError("expression nested too deeply for the stack left") from None

    def evaluate(self, root: dict[str, Any]) -> Any:
        """The value with `$` bound to `root`: JSON values in, JSON values out.

        The result may share lists and objects with `root`. Raises SafeExpressionError
        on a type error or when a limit is reached.
        """
        try:
            return self._run(_Scope(root))
        except RecursionError:  # from comparing or printing absurdly deep data
            raise SafeExpressionError("expression or its data nested too deeply") from None
        except _Fault as fault:  # every node turns faults into errors with a column; this is a backstop
            raise SafeExpressionError(str(fault)) from None


def compile_expression(source: str) -> Compiled:
    """Parse `source` once; SafeExpressionError on a syntax error, unknown function or bad argument count."""
    return Compiled(source)


@lru_cache(maxsize=512)
def _cached(source: str) -> Compiled:
    return Compiled(source)


def evaluate(source: str, root: dict[str, Any]) -> Any:
    """Compile (remembering the last 512 sources) and evaluate `source` against `root`."""
    return (_cached(source) if isinstance(source, str) else Compiled(source)).evaluate(root)
