"""The safe expression language of SWITCH, DO_WHILE and INLINE: pure and fast, no servers."""

from __future__ import annotations

import ast
import inspect
import math
import sys
from typing import Any
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core import safe_expr
from orchestrator.core.safe_expr import Compiled, SafeExpressionError, compile_expression, evaluate

ROOT: dict[str, Any] = {
    "amount": 150,
    "price": 2.5,
    "qty": 4,
    "name": "Ada",
    "tags": ["a", "b"],
    "items": [10, 20, 30],
    "empty": [],
    "obj": {"x": 1, "y": {"z": [1, 2, {"deep": "yes"}]}},
    "counted": {"length": "mine", "other": 1},
    "key with space": 7,
    "loop": {"iteration": 1},
    "check": {"output": {"done": False}},
    "nothing": None,
}

# No example database: the tests leave no files behind.
FUZZ = settings(max_examples=400, deadline=None, database=None)
PROPERTY = settings(max_examples=300, deadline=None, database=None)


def run(source: str, root: dict[str, Any] | None = None) -> Any:
    return evaluate(source, ROOT if root is None else root)


def error_of(call: Callable[[], Any]) -> SafeExpressionError:
    with pytest.raises(SafeExpressionError) as caught:
        call()
    return caught.value


# ------------------------------------------------------------------ the three uses

def test_switch_expression_picks_a_label() -> None:
    assert run("$.amount > 100 ? 'big' : 'small'") == "big"
    assert run("$.amount > 100 ? 'big' : 'small'", {"amount": 5}) == "small"


def test_do_while_condition() -> None:
    assert run("$.loop.iteration < 3 && !$.check.output.done") is True
    assert run("$.loop.iteration < 3 && !$.check.output.done",
               {"loop": {"iteration": 3}, "check": {"output": {"done": False}}}) is False


def test_inline_builds_an_object() -> None:
    assert run("{ total: $.price * $.qty, 'tag list': $.tags + ['x'], n: len($.items) }") == {
        "total": 10.0, "tag list": ["a", "b", "x"], "n": 3}
    assert ROOT["tags"] == ["a", "b"]  # the root is never changed


def test_compiled_is_reusable_and_keeps_its_source() -> None:
    compiled = compile_expression("$.n * 2")
    assert isinstance(compiled, Compiled) and compiled.source == "$.n * 2"
    assert [compiled.evaluate({"n": n}) for n in (1, 2, 3)] == [2, 4, 6]
    assert compiled == Compiled("$.n * 2")


# ------------------------------------------------------------------ precedence

@pytest.mark.parametrize("source, expected", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("2 * 3 % 4", 2),
    ("2 + 3 % 2", 3),
    ("12 / 2 / 3", 2),
    ("-2 * 3", -6),
    ("- -2", 2),
    ("-(2 + 3)", -5),
    ("1 + 2 == 3", True),
    ("1 < 2 == true", True),
    ("2 > 1 && 3 > 2", True),
    ("1 + 2 > 2 && 3 < 4", True),
    ("true || false && false", True),
    ("(true || false) && false", False),
    ("!true || true", True),
    ("!(true || true)", False),
    ("!0", True),
    ("1 == 1 != false", True),
    ("'x' + 1 + 2", "x12"),
    ("1 + 2 + 'x'", "3x"),
    ("1 < 2 ? 'a' : 'b'", "a"),
    ("false || 0 ? 'a' : 'b'", "b"),
    ("$.items[1] * 2 + $.items.length", 43),
])
def test_precedence(source: str, expected: Any) -> None:
    assert run(source) == expected
    assert type(run(source)) is type(expected)


@pytest.mark.parametrize("source, expected", [
    ("1 ? 2 : 3 ? 4 : 5", 2),
    ("0 ? 2 : 3 ? 4 : 5", 4),
    ("0 ? 2 : 0 ? 4 : 5", 5),
    ("true ? false ? 1 : 2 : 3", 2),
    ("(1 ? 0 : 1) ? 'a' : 'b'", "b"),
    ("$.amount > 1000 ? 'huge' : $.amount > 100 ? 'big' : 'small'", "big"),
])
def test_ternary_nests_to_the_right(source: str, expected: Any) -> None:
    assert run(source) == expected


# ------------------------------------------------------------------ semantics

@pytest.mark.parametrize("source, expected", [
    ("7 / 2", 3.5), ("6 / 2", 3), ("-7 % 3", -1), ("7 % -3", 1), ("5.5 % 2", 1.5),
    ("0.1 + 0.2 > 0.3", True), ("2 * 0.5", 1.0), ("1e3", 1000.0), ("007", 7),
])
def test_arithmetic(source: str, expected: Any) -> None:
    result = run(source)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("source", [
    "1 == 1.0", "1 === 1", "'a' == 'a'", "null == null", "[1, [2]] == [1, [2.0]]",
    "{a: 1, b: [true]} == {b: [true], a: 1}", "1 !== 2", "1 != true", "0 != false", "'1' != 1",
    "null != false", "[] != {}", "[1] != [true]", "{a: null} != {}",
])
def test_equality_is_strict_json_equality(source: str) -> None:
    assert run(source) is True


@pytest.mark.parametrize("value, truthy", [
    (None, False), (False, False), (0, False), (0.0, False), ("", False), ([], False), ({}, False),
    (True, True), (1, True), (-0.5, True), ("0", True), ("false", True), ([0], True), ({"a": None}, True),
])
def test_truthiness(value: Any, truthy: bool) -> None:
    assert run("$.v ? 'yes' : 'no'", {"v": value}) == ("yes" if truthy else "no")
    assert run("!$.v", {"v": value}) is (not truthy)
    assert run("$.v && true", {"v": value}) is truthy
    assert run("$.v || false", {"v": value}) is truthy


@pytest.mark.parametrize("source, expected", [
    ("false && (1 / 0)", False),
    ("true || (1 / 0)", True),
    ("0 && $.x.y < 'a'", False),
    ("true ? 1 : 1 / 0", 1),
    ("false ? 1 / 0 : 2", 2),
    ("1 && 'x'", True),
    ("null || 0", False),
    ("false && 1 / 0 || true", True),
])
def test_short_circuit_and_boolean_results(source: str, expected: Any) -> None:
    assert run(source) is expected if isinstance(expected, bool) else run(source) == expected


def test_and_evaluates_its_right_side_when_needed() -> None:
    assert "division by zero" in str(error_of(lambda: run("true && 1 / 0")))
    assert "division by zero" in str(error_of(lambda: run("false || 1 / 0")))


@pytest.mark.parametrize("source, expected", [
    ("$", ROOT),
    ("$.name", "Ada"),
    ("$.obj.y.z[2].deep", "yes"),
    ("$['key with space']", 7),
    ("$[\"obj\"]['x']", 1),
    ("$.missing", None),
    ("$.missing.deeper[3].still", None),
    ("$.nothing.x", None),
    ("$.items[5]", None),
    ("$.items[-1]", None),
    ("$.items[1.0]", 20),
    ("$.items[0.5]", None),
    ("$.items['0']", None),
    ("$.items[true]", None),
    ("$.name[0]", "A"),
    ("$.name.x", None),
    ("$.amount.x", None),
    ("$.amount[0]", None),
    ("$.items.length", 3),
    ("$.empty.length", 0),
    ("'abc'.length", 3),
    ("$.obj.length", 2),
    ("$.counted.length", "mine"),
    ("$.amount.length", None),
    ("{'1': 'one'}[1]", "one"),
    ("$[$.tags[0] + 'mount']", 150),
    ("[1, 2, 3][1]", 2),
    ("[[1, 2], [3]][0][1]", 2),
    ("$.true", None),
    ("{true: 1}.true", 1),
])
def test_member_and_index(source: str, expected: Any) -> None:
    assert run(source) == expected


@pytest.mark.parametrize("source, expected", [
    ("'n=' + null", "n=null"),
    ("'b=' + true", "b=true"),
    ("'v' + 1.5 * 2", "v3"),
    ("'v' + 0.25", "v0.25"),
    ("'x' + [1, 'b', null]", 'x[1,"b",null]'),
    ("'o' + {a: 'é'}", 'o{"a":"é"}'),
    ("[1] + [2, [3]]", [1, 2, [3]]),
    ("'' + ''", ""),
    ("'it\\'s' + \"\\\"q\\\"\"", "it's\"q\""),
    ("'\\u00e9\\n\\t\\\\'", "é\n\t\\"),
])
def test_plus_concatenates(source: str, expected: Any) -> None:
    assert run(source) == expected


@pytest.mark.parametrize("source, expected", [
    ("'b' > 'a'", True), ("'B' < 'a'", True), ("2 >= 2.0", True), ("1 <= 0", False), ("-1 < 0", True),
])
def test_comparison(source: str, expected: bool) -> None:
    assert run(source) is expected


# ------------------------------------------------------------------ built-in functions

@pytest.mark.parametrize("source, expected", [
    ("len('abc')", 3), ("len($.items)", 3), ("len($.obj)", 2),
    ("min(3, 1, 2)", 1), ("max(3, 1, 2)", 3), ("min($.items)", 10), ("max([2.5, 1])", 2.5),
    ("min('b', 'a')", "a"), ("max(['x', 'y'])", "y"), ("max(7)", 7),
    ("abs(-3)", 3), ("abs(2.5)", 2.5),
    ("round(2.5)", 3), ("round(-2.5)", -3), ("round(2.4)", 2), ("round(1.005, 2)", 1.01),
    ("round(3.14159, 3)", 3.142), ("round(7)", 7), ("round(7, 2)", 7), ("round(1e20)", 10 ** 20),
    ("floor(2.7)", 2), ("floor(-2.1)", -3), ("ceil(2.1)", 3), ("ceil(-2.7)", -2), ("floor(4)", 4),
    ("lower('AbC')", "abc"), ("upper('AbC')", "ABC"),
    ("contains($.tags, 'b')", True), ("contains($.tags, 'z')", False), ("contains([1, [2]], [2.0])", True),
    ("contains([1], true)", False), ("contains('hello', 'ell')", True), ("contains('hello', 1)", False),
    ("keys($.counted)", ["length", "other"]), ("keys({})", []),
    ("sum($.items)", 60), ("sum([])", 0), ("sum([0.5, 1])", 1.5),
    ("str(1)", "1"), ("str(2.0)", "2"), ("str(0.5)", "0.5"), ("str(null)", "null"), ("str(false)", "false"),
    ("str('s')", "s"), ("str([1, 'a'])", '[1,"a"]'), ("str({a: {b: []}})", '{"a":{"b":[]}}'),
    ("num('42')", 42), ("num(' -1.5 ')", -1.5), ("num('2e3')", 2000.0), ("num(7)", 7),
    ("exists($.name)", True), ("exists($.missing)", False), ("exists(0)", True), ("exists(null)", False),
])
def test_builtins(source: str, expected: Any) -> None:
    result = run(source)
    assert result == expected and type(result) is type(expected)


def test_every_builtin_is_covered() -> None:
    covered = {name for name in safe_expr._BUILTINS if f"{name}(" in inspect.getsource(test_builtins)}
    assert covered == set(safe_expr._BUILTINS)


@pytest.mark.parametrize("source, message", [
    ("len(1)", "len() needs a string, list or object, got number"),
    ("min([])", "min() needs one or more numbers, or one or more strings"),
    ("max(1, 'a')", "max() needs one or more numbers"),
    ("abs('1')", "abs() needs a number, got string"),
    ("round(1.5, 16)", "digits from 0 to 15"),
    ("round(1.5, 1.5)", "digits from 0 to 15"),
    ("floor(null)", "floor() needs a number, got null"),
    ("ceil([])", "ceil() needs a number, got list"),
    ("lower(1)", "lower() needs a string, got number"),
    ("upper(null)", "upper() needs a string"),
    ("contains({a: 1}, 'a')", "contains() needs a list or string, got object"),
    ("keys([1])", "keys() needs an object, got list"),
    ("sum([1, '2'])", "sum() needs a list of numbers only"),
    ("sum(1)", "sum() needs a list"),
    ("num('12abc')", "num() cannot read '12abc' as a number"),
    ("num('')", "cannot read"),
    ("num(true)", "num() needs a number or string, got boolean"),
])
def test_builtin_type_errors(source: str, message: str) -> None:
    error = error_of(lambda: run(source))
    assert message in str(error) and error.column == 1


# ------------------------------------------------------------------ errors name their position

@pytest.mark.parametrize("source, column, message", [
    ("len(1 x)", 7, "expected ')' but found 'x'"),
    ("(1 + 2", 7, "expected ')' but found end of expression"),
    ("1 +* 2", 4, "expected a value but found '*'"),
    ("1 2", 3, "expected an operator or the end but found '2'"),
    ("", 1, "expected a value but found end of expression"),
    ("   ", 4, "expected a value but found end of expression"),
    ("$.a.0", 5, "expected a property name after '.' but found '0'"),
    ("$.", 3, "expected a property name after '.'"),
    ("'abc", 1, "string is not closed"),
    ("1 + \"abc\\\"", 5, "string is not closed"),
    ("1 # 2", 3, "unexpected character '#'"),
    ("$.a + `x`", 7, "unexpected character '`'"),
    ("'ab\\q'", 4, "unknown escape '\\q' in string"),
    ("foo(1)", 1, "unknown function 'foo'"),
    ("1 + bar", 5, "unknown name 'bar' (read input as $.bar"),
    ("round(1, 2, 3)", 1, "round() takes 1 or 2 argument(s), got 3"),
    ("len()", 1, "len() takes 1 argument(s), got 0"),
    ("min()", 1, "min() takes at least 1 argument(s), got 0"),
    ("len 1", 5, "expected '(' but found '1'"),
    ("{1: 2}", 2, "expected a property name but found '1'"),
    ("{a 2}", 4, "expected ':' but found '2'"),
    ("[1, 2", 6, "expected ']' but found end of expression"),
    ("[1,, 2]", 4, "expected a value but found ','"),
    ("1 ? 2", 6, "expected ':' but found end of expression"),
    ("1e999", 1, "number out of range"),
    ("1 = 2", 3, "unexpected character '='"),
    ("a.b", 1, "unknown name 'a'"),
])
def test_syntax_errors_name_the_column(source: str, column: int, message: str) -> None:
    error = error_of(lambda: compile_expression(source))
    assert error.column == column
    assert str(error).startswith(f"at column {column}: ") and message in str(error)


@pytest.mark.parametrize("source, column, message", [
    ("1 < 'a'", 3, "'<' compares two numbers or two strings, got number and string"),
    ("[1] >= [2]", 5, "'>=' compares two numbers or two strings, got list and list"),
    ("null > 1", 6, "'>' compares two numbers or two strings, got null and number"),
    ("$.amount / 0", 10, "division by zero"),
    ("5 % (2 - 2)", 3, "division by zero"),
    ("1 + 2 - 'a'", 7, "'-' needs two numbers, got number and string"),
    ("-'a'", 1, "'-' needs a number, got string"),
    ("true + 1", 6, "'+' needs two numbers, two lists or a string, got boolean and number"),
    ("{} * 2", 4, "'*' needs two numbers, got object and number"),
    ("[1] + {}", 5, "'+' needs two numbers, two lists or a string, got list and object"),
    ("1e308 * 10", 7, "number out of range (not finite)"),
    ("  upper(1)", 3, "upper() needs a string, got number"),
])
def test_evaluation_errors_name_the_column(source: str, column: int, message: str) -> None:
    compiled = compile_expression(source)  # type errors are found only when evaluating
    error = error_of(lambda: compiled.evaluate(ROOT))
    assert str(error) == f"at column {column}: {message}"
    assert error.column == column


def test_expression_error_is_a_value_error() -> None:
    assert issubclass(SafeExpressionError, ValueError)
    assert "must be text" in str(error_of(lambda: compile_expression(42)))  # type: ignore[arg-type]  # on purpose
    assert "must be text" in str(error_of(lambda: evaluate(["$"], ROOT)))  # type: ignore[arg-type]  # on purpose


# ------------------------------------------------------------------ limits

def test_nesting_limit() -> None:
    # Each parenthesised level is one level of nesting; the whole expression is the first.
    deepest = "(" * (safe_expr.MAX_DEPTH - 1) + "1" + ")" * (safe_expr.MAX_DEPTH - 1)
    assert run(deepest) == 1
    too_deep = "(" + deepest + ")"
    error = error_of(lambda: compile_expression(too_deep))
    assert "nested deeper than the limit of 64 levels" in str(error)


@pytest.mark.parametrize("source", [
    "(" * 1000 + "1" + ")" * 1000,
    "-" * 1000 + "1",
    "!" * 1000 + "true",
    "[" * 1000 + "]" * 1000,
    "{a:" * 500 + "1" + "}" * 500,
    "len(" * 500 + "'x'" + ")" * 500,
    "1 ? " * 500 + "1" + " : 2" * 500,
    "0 ? 1 : " * 500 + "2",
    "$" + "[$" * 500 + "]" * 500,
    "1 || 1 && 1 == 1 < 1 + 1 * [" * 100 + "1" + "]" * 100,
])
def test_deep_nesting_is_refused_not_a_recursion_error(source: str) -> None:
    assert "nested deeper than the limit" in str(error_of(lambda: compile_expression(source)))


def _deepest(wrap: Callable[[str], str]) -> str:
    """The most deeply nested expression of this shape that still compiles."""
    source = "1"
    while True:
        try:
            compile_expression(wrap(source))
        except SafeExpressionError:
            return source
        source = wrap(source)


@pytest.mark.parametrize("wrap,outcome", [
    (lambda x: f"[{x} * 1 + 1 < 2 == true && 1 || 0][0]",
     "error at column 99: '*' needs two numbers, got boolean and number"),
    (lambda x: f"max({x} * 1 + 1 < 2 == true && 1 || 0, 0)",
     "error at column 245: max() needs one or more numbers, or one or more strings"),
    (lambda x: f"{{a: {x} * 1 + 1 < 2 == true && 1 || 0}}.a",
     "error at column 284: '*' needs two numbers, got boolean and number"),
    (lambda x: f"1 || 1 && 1 == 1 < 1 + 1 * -[{x}][0]", "value True"),
    (lambda x: f"true ? {x} : 0", "value 1"),
    (lambda x: f"$[{x}]", "value None"),
])
def test_deepest_allowed_expressions_need_little_stack(wrap: Callable[[str], str], outcome: str) -> None:
    """The nesting limit keeps parsing and evaluation within 500 Python frames (of 1000 by default):
    with only that much stack left, the deepest expression of each shape still compiles and
    evaluates to its own value or type error, which is found at the bottom of the nesting
    (not 'nested too deeply for the stack left', which running out of stack would give)."""
    source = _deepest(wrap)
    frames_in_use = len(inspect.stack(0))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames_in_use + 500)
    try:
        compiled = Compiled(source)
        try:
            got = f"value {compiled.evaluate(ROOT)!r}"
        except SafeExpressionError as error:
            got = f"error {error}"
    finally:
        sys.setrecursionlimit(limit)
    assert got == outcome


def test_source_length_limit() -> None:
    longest = "1+" * 2047 + "11"
    assert len(longest) == safe_expr.MAX_SOURCE_CHARS
    assert run(longest) == 2047 + 11
    error = error_of(lambda: compile_expression(longest + " "))
    assert str(error) == "expression is 4097 characters long, over the limit of 4096"


def test_string_growth_is_capped() -> None:
    root = {"s": "x" * 400_000}
    assert len(run("$.s + $.s", root)) == 800_000
    error = error_of(lambda: run("$.s + $.s + $.s", root))
    assert str(error) == "at column 11: string longer than the limit of 1048576 characters"
    assert "limit of 1048576" in str(error_of(lambda: run("str([$.s, $.s, $.s])", root)))
    assert "limit of 1048576" in str(error_of(lambda: run("'' + [" + "$.s, " * 600 + "1]", root)))
    assert "limit of 1048576" in str(error_of(lambda: run("upper($.s)", {"s": "ß" * 600_000})))  # 'SS


def test_repeated_concatenation_stops_at_the_limit_quickly() -> None:
    root = {"s": "x" * 100_000}
    source = " + ".join(["$.s"] * 600)  # would be 60 MB; the 10th '+' (11 copies) is refused
    assert len(source) < safe_expr.MAX_SOURCE_CHARS
    error = error_of(lambda: run(source, root))
    assert "string longer than the limit" in str(error) and error.column == 6 * 10 - 1


def test_list_growth_is_capped() -> None:
    root = {"l": list(range(60_000))}
    assert len(run("$.l + [1]", root)) == 60_001
    error = error_of(lambda: run("$.l + $.l", root))
    assert str(error) == "at column 5: list longer than the limit of 100000 items"


def test_step_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safe_expr, "MAX_STEPS", 5)
    assert run("1 + 1 + 1 + 1") == 4  # one chain node and four constants
    error = error_of(lambda: run("1 + 1 + 1 + 1 + 1"))
    assert str(error) == "at column 17: evaluation took more than the limit of 5 steps"


def test_longest_source_stays_within_the_default_step_limit() -> None:
    # No loops and no recursion: every node runs at most once, so 4096 characters
    # cannot reach 10,000 steps.
    assert run("[" + "1," * 2047 + "]") == [1] * 2047


def test_data_nested_too_deep_is_an_expression_error() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    root = {"d": deep}
    assert run("$.d.length", root) == 1
    assert "nested too deeply" in str(error_of(lambda: run("$.d == $.d", root)))
    assert "nested too deeply" in str(error_of(lambda: run("str($.d)", root)))


def test_values_that_are_not_json_give_expression_errors() -> None:
    root = {"weird": object(), "nan": math.nan, "huge": 10 ** 400}
    assert run("$.weird.__class__", root) is None
    assert "cannot turn unsupported value into text" in str(error_of(lambda: run("str($.weird)", root)))
    assert "cannot turn list into text" in str(error_of(lambda: run("'' + [$.nan]", root)))
    assert "number out of range" in str(error_of(lambda: run("$.huge + 0.5", root)))


# ------------------------------------------------------------------ no way into Python

@pytest.mark.parametrize("source", [
    "$.__class__", "$['__class__']", "$.__dict__", "$.keys", "$.get", "$.items.__len__",
    "$.name.upper", "'abc'.__class__.__mro__", "[].__class__", "{}.constructor", "$.obj.__init__.__globals__",
    "$[str($)]", "$.tags.append", "$.amount.real", "$.price.as_integer_ratio",
])
def test_python_attributes_are_just_missing_keys(source: str) -> None:
    assert run(source) is None


@pytest.mark.parametrize("source", [
    "__import__('os')", "().__class__", "eval('1')", "exec('1')", "open('/etc/passwd')",
    "getattr($, 'x')", "lambda: 1", "str.__class__", "len.__call__(1)", "$.keys()", "'a'.upper()",
    "import os", "$.a; 1", "1 if 1 else 2", "[x for x in $]", "$.a = 1", "1 ** 2", "os.system('x')",
    "globals()", "__builtins__", "$.__class__()", "print(1)", "`1`", "f'{1}'",
])
def test_python_syntax_and_names_are_refused(source: str) -> None:
    error_of(lambda: run(source))


def test_module_never_calls_into_dynamic_python() -> None:
    tree = ast.parse(inspect.getsource(safe_expr))
    banned_names = {"eval", "exec", "compile", "getattr", "setattr", "__import__", "globals", "locals", "vars"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in banned_names, node.func.id
        if isinstance(node, ast.Attribute):
            assert node.attr not in {"literal_eval", "__dict__", "__globals__"}, node.attr
        assert not isinstance(node, (ast.Import, ast.ImportFrom)) or all(
            alias.name not in {"ast", "importlib", "os", "subprocess", "pickle"} for alias in node.names)


# ------------------------------------------------------------------ properties

def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_is_json(item) for item in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _is_json(v) for k, v in value.items())


def _compiles_or_refuses(source: str) -> Compiled | None:
    try:
        return compile_expression(source)
    except SafeExpressionError:
        return None


@FUZZ
@given(st.text())
def test_any_text_compiles_or_raises_expression_error(source: str) -> None:
    _compiles_or_refuses(source)


@FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)))
def test_printable_text_compiles_or_raises_expression_error(source: str) -> None:
    compiled = _compiles_or_refuses(source)
    if compiled is not None:
        try:
            assert _is_json(compiled.evaluate(ROOT))
        except SafeExpressionError:
            pass


TOKENS = ["$", ".", "[", "]", "(", ")", "{", "}", ",", ":", "?", "!", "-", "+", "*", "/", "%",
          "==", "!=", "===", "<", ">=", "&&", "||", "0", "1", "2.5", "1e3", "'a'", '"b"', "''",
          "true", "false", "null", "name", "items", "length", "obj", "x", "len", "min", "max", "round",
          "str", "num", "contains", "keys", "sum", "exists", "upper", "floor", "__class__"]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=25), st.sampled_from([" ", ""]))
def test_token_soup_compiles_and_evaluates_or_raises_expression_error(tokens: list[str], sep: str) -> None:
    compiled = _compiles_or_refuses(sep.join(tokens))
    if compiled is not None:
        try:
            assert _is_json(compiled.evaluate(ROOT))
        except SafeExpressionError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
SHAPES = ([f"$.a {op} $.b" for op in sorted(safe_expr._PRECEDENCE)]
          + [f"{name}($.a)" for name in sorted(safe_expr._BUILTINS)]
          + ["contains($.a, $.b)", "round($.a, $.b)", "min($.a, $.b)", "max($.a, $.b)",
             "!$.a", "-$.a", "$.a[$.b]", "$.a.length", "$.a ? $.b : $.a", "str([$.a, {k: $.b}])"])


@PROPERTY
@given(json_values, json_values, st.sampled_from(SHAPES))
def test_every_operator_and_function_on_any_json_gives_json_or_expression_error(
        a: Any, b: Any, shape: str) -> None:
    try:
        assert _is_json(run(shape, {"a": a, "b": b}))
    except SafeExpressionError:
        pass


# Arithmetic trees over small integers, printed with only the parentheses that
# precedence needs (plus some at random), checked against Python integer arithmetic.
_ARITH_LEVEL = {"+": 5, "-": 5, "*": 6, "%": 6}

arith_trees = st.recursive(
    st.integers(min_value=0, max_value=20),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(sorted(_ARITH_LEVEL)), inner, inner, st.booleans()),
        st.tuples(st.just("neg"), inner, st.booleans()),
    ),
    max_leaves=12,
)


def _arith_text(tree: Any, outer: int = 0, right: bool = False) -> str:
    if isinstance(tree, int):
        return str(tree)
    if tree[0] == "neg":
        text, level = "-" + _arith_text(tree[1], 7, True), 7
    else:
        op, left, right_tree, _ = tree
        level = _ARITH_LEVEL[op]
        text = f"{_arith_text(left, level)} {op} {_arith_text(right_tree, level, True)}"
    needs = level < outer or (level == outer and right)
    return f"({text})" if needs or tree[-1] else text


def _arith_value(tree: Any) -> int:
    """Reference semantics; a zero divisor raises ZeroDivisionError."""
    if isinstance(tree, int):
        return tree
    if tree[0] == "neg":
        return -_arith_value(tree[1])
    op, a, b = tree[0], _arith_value(tree[1]), _arith_value(tree[2])
    if op == "%":
        if b == 0:
            raise ZeroDivisionError
        return int(math.copysign(abs(a) % abs(b), a)) if a else 0
    return {"+": a + b, "-": a - b, "*": a * b}[op]


@PROPERTY
@given(arith_trees)
def test_integer_arithmetic_matches_a_reference(tree: Any) -> None:
    source = _arith_text(tree)
    try:
        expected = _arith_value(tree)
    except ZeroDivisionError:
        assert "division by zero" in str(error_of(lambda: run(source)))
        return
    assert run(source) == expected, source


# Boolean trees: comparisons of small integers joined by && || !, against Python.
_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
_LOGIC_LEVEL = {"||": 1, "&&": 2}

logic_trees = st.recursive(
    st.tuples(st.just("cmp"), st.sampled_from(sorted(_COMPARE)), st.integers(-3, 3), st.integers(-3, 3)),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(sorted(_LOGIC_LEVEL)), inner, inner, st.booleans()),
        st.tuples(st.just("!"), inner),
    ),
    max_leaves=10,
)


def _logic_text(tree: Any, outer: int = 0) -> str:
    kind = tree[0]
    if kind == "cmp":
        return f"{tree[2]} {tree[1]} {tree[3]}"  # comparisons bind tighter than && and ||
    if kind == "!":
        return f"!({_logic_text(tree[1])})"
    level = _LOGIC_LEVEL[kind]
    text = f"{_logic_text(tree[1], level)} {kind} {_logic_text(tree[2], level + 1)}"
    return f"({text})" if level < outer or tree[3] else text


def _logic_value(tree: Any) -> bool:
    kind = tree[0]
    if kind == "cmp":
        return bool(_COMPARE[tree[1]](tree[2], tree[3]))
    if kind == "!":
        return not _logic_value(tree[1])
    if kind == "&&":
        return _logic_value(tree[1]) and _logic_value(tree[2])
    return _logic_value(tree[1]) or _logic_value(tree[2])


@PROPERTY
@given(logic_trees)
def test_boolean_logic_matches_a_reference(tree: Any) -> None:
    source = _logic_text(tree)
    assert run(source) is _logic_value(tree), source
