"""Conductor's JSONPath in `${...}` (orchestrator/core/jsonpaths.py): each syntax against what
Jayway JsonPath answers, missing paths and odd types, the fast path for plain paths, the
refusals and bounds, registration (one workflow on a real node:
tests/integration/core/test_jsonpath_on_node.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from orchestrator.core import jsonpaths
from orchestrator.core.definitions import normalise_task_def, validate_workflow_def
from orchestrator.core.jsonpaths import MAX_NESTING, MAX_PATH_CHARS, WorkLimit
from orchestrator.core.templates import TemplateError, parse_conductor_reference, resolve
from sim import Sim, task_defs

BOOKS = [
    {"category": "reference", "author": "Nigel Rees", "title": "Sayings of the Century", "price": 8.95},
    {"category": "fiction", "author": "Evelyn Waugh", "title": "Sword of Honour", "price": 12.99},
    {"category": "fiction", "author": "Herman Melville", "title": "Moby Dick", "isbn": "0-553-21311-3", "price": 8.99},
    {"category": "fiction", "author": "J. R. R. Tolkien", "title": "The Lord of the Rings", "isbn": "0-395-19395-8",
     "price": 22.99},
]
TITLES = [book["title"] for book in BOOKS]
OUTPUT = {"store": {"book": BOOKS, "bicycle": {"color": "red", "price": 19.95}}, "a b": 1, "some-key": {"x": 1},
          "3": {"x": 3}, "hits": {"hits": [{"_source": {"status": "green", "inner": {"status": "deep"}}},
                                          {"_source": {"status": "red"}}]},
          "text": "héllo", "n": 7, "nothing": None, "flag": True, "empty": []}
SCOPE: dict[str, Any] = {
    "workflow": {"input": {"max": 10, "kind": "fiction", "tags": ["a", "b", "c"]}, "variables": {}, "output": {}},
    "src": {"input": {}, "output": OUTPUT},
}


def value(expression: Any) -> Any:
    return resolve(expression, SCOPE)


# Each path with what Jayway answers for `$.<path>` over Conductor's document: a definite path
# (keys and indexes) gives the value or null, an indefinite one (.., *, filter, slice) a list.
JAYWAY = [
    # deep scan: every match at any depth, in document order (a node before its descendants)
    ("src.output..status", ["green", "deep", "red"]),
    ("src.output..author", [book["author"] for book in BOOKS]),
    ("src.output.store..price", [8.95, 12.99, 8.99, 22.99, 19.95]),
    ("src.output..book[2].title", [TITLES[2]]),
    ("src.output..missing", []),
    # wildcards, on lists and on objects
    ("src.output.store.book[*].author", [book["author"] for book in BOOKS]),
    ("src.output.hits.hits[*]._source.status", ["green", "red"]),
    ("src.output.store.*", [BOOKS, {"color": "red", "price": 19.95}]),
    ("src.output.store.bicycle[*]", ["red", 19.95]),
    ("src.output.missing[*]", []),
    ("src.output.n[*]", []),
    # filters
    ("src.output.store.book[?(@.category == 'fiction')].title", TITLES[1:]),
    ('src.output.store.book[?(@.category == "fiction")].title', TITLES[1:]),
    ("src.output.store.book[?(@.category != 'fiction')].title", TITLES[:1]),
    ("src.output.store.book[?(@.price < 10)].title", [TITLES[0], TITLES[2]]),
    ("src.output.store.book[?(@.price > 20)].title", [TITLES[3]]),
    ("src.output.store.book[?(@.price >= 12.99)].title", [TITLES[1], TITLES[3]]),
    ("src.output.store.book[?(@.price <= 8.99)].title", [TITLES[0], TITLES[2]]),
    ("src.output.store.book[?(@.category == 'fiction' && @.price < 20)].title", TITLES[1:3]),
    ("src.output.store.book[?(@.price < 9 || @.price > 20)].title", [TITLES[0], TITLES[2], TITLES[3]]),
    ("src.output.store.book[?(!(@.category == 'fiction'))].title", TITLES[:1]),
    ("src.output.store.book[?(@.isbn)].title", TITLES[2:]),                       # has the key
    ("src.output.store.book[?(@.price < $.workflow.input.max)].title", [TITLES[0], TITLES[2]]),
    ("src.output.store.book[?(@.category == $.workflow.input.kind)].title", TITLES[1:]),
    ("src.output.store.book[?(length(@.title) > 15)].title", [TITLES[0], TITLES[3]]),
    ("src.output.store.book[?(@.nope == 'x')]", []),
    ("src.output.store.book[?(@.price > 'a')]", []),                               # types differ: no match
    ("src.output..book[?(@.price > 20)].author", ["J. R. R. Tolkien"]),
    ("src.output.store.book[?(@.category == 'fiction')]", BOOKS[1:]),
    # slices and negative indexes
    ("src.output.store.book[0:2].title", TITLES[:2]),
    ("src.output.store.book[:2].title", TITLES[:2]),
    ("src.output.store.book[2:].title", TITLES[2:]),
    ("src.output.store.book[-1:].title", TITLES[3:]),
    ("src.output.store.book[-2:].title", TITLES[2:]),
    ("src.output.store.book[1:99].title", TITLES[1:]),
    ("src.output.store.book[5:9]", []),
    ("src.output.store.book[-1].title", TITLES[3]),                                # definite: the value
    ("src.output.store.book[-9].title", None),
    ("workflow.input.tags[-1]", "c"),
    # keys Jayway reads in dot or bracket notation
    ("src.output['a b']", 1),
    ("src.output.some-key.x", 1),
    ("src.output.some-key[*]", [1]),
    ("src.output.3[*]", [3]),
    ("src.output['store']['bicycle']['color']", "red"),
    ("$['src']['output']['store']['bicycle'].color", "red"),
    ("$.src.output..status", ["green", "deep", "red"]),
    # missing: a definite path gives null
    ("src.output.store.book[9].title", None),
    ("src.output.missing.deeper", None),
    ("src.output.store.book.title", None),
    # length(): of what it follows; for each match of an indefinite path
    ("src.output.store.book.length()", 4),
    ("src.output.store.bicycle.length()", 2),
    ("src.output.text.length()", 5),                                                # Jayway: null (see jsonpaths.py)
    ("src.output.n.length()", None),
    ("src.output.missing.length()", None),
    ("src.output.empty.length()", 0),
    ("src.output..book.length()", [4]),
    ("src.output.store.book[?(@.isbn)].length()", [5, 5]),                          # each match's keys, as Jayway
    ("src.output.store.book[-1].length()", 5),
]


@pytest.mark.parametrize("path,expected", JAYWAY, ids=[path for path, _ in JAYWAY])
def test_each_path_answers_what_jayway_answers(path: str, expected: Any) -> None:
    assert value("${" + path + "}") == expected


def test_a_path_inside_text_is_written_as_json_and_plain_paths_still_read() -> None:
    assert value("statuses: ${src.output..status}") == 'statuses: ["green","deep","red"]'
    assert value("none: ${src.output..missing} '${src.output.store.book[-9]}'") == "none: [] ''"
    assert value("${src.output.store.bicycle.color}/${src.output.store.book[0].price}") == "red/8.95"
    assert value("$${src.output..status}") == "${src.output..status}"
    assert value({"all": ["${src.output.store.book[?(@.price > 20)].price}", "${workflow.input.tags[1]}"]}) == \
        {"all": [[22.99], "b"]}


def test_plain_paths_keep_the_fast_path_and_jsonpaths_are_compiled_once() -> None:
    for plain in ("workflow.input.max", "$.workflow.input.max", "src.output.store.book[0].title",
                  "src.output['a b']", "src.output.3.x", "src.output.store.book.length()", "src.status"):
        assert parse_conductor_reference(plain).jsonpath is None, plain
    for jsonpath in ("src.output..status", "src.output.store.*", "src.output.store.book[-1]",
                     "src.output.store.book[?(@.isbn)]", "src.output.store.book[0:2]"):
        assert parse_conductor_reference(jsonpath).jsonpath is not None, jsonpath
    assert parse_conductor_reference("src.output..status") is parse_conductor_reference("src.output..status")
    assert parse_conductor_reference.cache_info().maxsize == 4096   # bounded


def test_the_references_of_a_jsonpath_include_what_its_filters_read() -> None:
    defs = {"fetch": normalise_task_def({"name": "fetch"})}
    _, problems = validate_workflow_def({"name": "wf", "tasks": [
        {"name": "fetch", "taskReferenceName": "a", "inputParameters": {
            "x": "${workflow.input.items[?(@.id == $.b.output.id)]}"}},
        {"name": "fetch", "taskReferenceName": "b"},
    ]}, defs)
    assert problems == ["task 'a' (tasks[0]): 'inputParameters': '${b...}' names no earlier task reference"]


REFUSED = [
    ("src.output..a..b", "one deep scan '..' per path at most"),
    ("src.output.store.book[0,1]", "a list of selectors"),
    ("src.output['a','b']", "a list of selectors"),
    ("src.output.book[?(@.author =~ /Rees/)]", "Jayway's =~, in, nin"),
    ("src.output.book[?(@.category in ['fiction'])]", "Jayway's =~, in, nin"),
    ("src.output.book[?(match(@.author, 'N.*'))]", "match() is not read in a filter"),
    ("src.output.book[?(search(@.author, 'N'))]", "search() is not read in a filter"),
    ("src.output.book[?(@..x)]", "a query there names one value"),
    ("src.output.book[?(@.a[*])]", "a query there names one value"),
    ("src.output.book[?(@.a[*] == 1)]", "non-singular query is not comparable"),
    ("src.output.book[?(@.a[?(@.b)])]", "a query there names one value"),
    ("src.output.book[?(@.x == $[0])]", "begins with 'workflow' or a task reference"),
    ("src.output.book[?(@.x == $.workflow.secret)]", "after 'workflow.' use one of"),
    ("src.output.book.length().x", "'.length()' ends a path"),
    ("src.output.book.sum()", "only a final .length() is read"),
    ("src.output.book[", "not closed"),
    ("src.output.book[?(@.x == 1]", "not closed"),
    ("src.output.book[?(@.x ==)]", "not a JSONPath"),
    ("src.output.", "a '.' must be followed by a key"),
    ("src..status", "after a task reference use .input, .output"),
    ("workflow.secret[*]", "after 'workflow.' use one of"),
    ("@.x", "'@' is for filters"),
    ("$", "begin with 'workflow.'"),
    ("CPEWF_TASK_ID.x", "has no keys below it"),
    ("src.output.a" + "[?(" * 11 + "@" + ")]" * 11, f"nested more than {MAX_NESTING} deep"),
    ("src.output." + "k" * MAX_PATH_CHARS + "[*]", f"at most {MAX_PATH_CHARS} are read"),
]


@pytest.mark.parametrize("path,reason", REFUSED, ids=[path[:60] for path, _ in REFUSED])
def test_malformed_and_unsupported_paths_are_refused_with_a_reason(path: str, reason: str) -> None:
    with pytest.raises(TemplateError) as refused:
        parse_conductor_reference(path)
    message = str(refused.value)
    assert reason in message and "\n" not in message and len(message) < 400, message


def test_registration_refuses_a_bad_jsonpath_in_one_line() -> None:
    defs = {"fetch": normalise_task_def({"name": "fetch"})}
    _, problems = validate_workflow_def({"name": "wf", "tasks": [
        {"name": "fetch", "taskReferenceName": "a"},
        {"name": "fetch", "taskReferenceName": "b", "inputParameters": {"ok": "${a.output..status}",
                                                                       "bad": "${a.output.items[?(@.x =~ /y/)]}"}},
    ], "outputParameters": {"n": "${a.output.items[?(@.x == 'y')].length()}"}}, defs)
    assert len(problems) == 1 and problems[0].startswith("task 'b' (tasks[1]): 'inputParameters': "
                                                         "'${a.output.items[?(@.x =~ /y/)]}': not a JSONPath"), problems


def test_the_work_of_one_evaluation_is_linear_in_the_document() -> None:
    """A deep scan and a filter over a 60,000-value output, 30 levels deep in places."""
    deep: Any = {"status": "bottom"}
    for _ in range(27):
        deep = {"status": "level", "next": deep}
    items = [{"id": i, "status": "OK" if i % 3 else "FAIL", "meta": {"tags": ["a", "b"], "n": i}}
             for i in range(10_000)]
    scope = {"workflow": {"input": {}}, "big": {"input": {}, "output": {"items": items, "deep": deep}}}
    started = time.perf_counter()
    statuses = resolve("${big.output..status}", scope)
    failed = resolve("${big.output.items[?(@.status == 'FAIL' && @.meta.n < 100)].id}", scope)
    elapsed = time.perf_counter() - started
    assert len(statuses) == 10_000 + 28 and statuses[-1] == "bottom"
    assert failed == list(range(0, 100, 3))
    assert elapsed < 5, elapsed


def test_the_jsonpaths_of_one_decision_share_a_work_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonpaths, "MAX_WORK", 50)
    output = {"items": [{"status": i} for i in range(20)]}
    scope: dict[str, Any] = {"workflow": {"input": {}}, "t": {"input": {}, "output": output}}
    assert len(resolve("${t.output..status}", scope)) == 20                 # 46 of the 50
    assert resolve("${t.output.items[0].status}", scope) == 0                # plain paths cost nothing
    with pytest.raises(WorkLimit, match="went over 50 values"):
        resolve("${t.output.items[*].status}", scope)                       # 20 more
    fresh = {"workflow": {"input": {}}, "t": {"input": {}, "output": output}}
    assert resolve("${t.output.items[*].status}", fresh) == list(range(20))   # a new decision, a new meter


def test_a_decision_over_the_work_limit_raises_out_of_the_decider(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node ends such a workflow FAILED with the reason (any decision the engine cannot make)."""
    monkeypatch.setattr(jsonpaths, "MAX_WORK", 1000)
    sim = Sim({"name": "wf", "tasks": [
        {"name": "scan", "taskReferenceName": "scan", "inputParameters": {"all": "${workflow.input..v}"}}]},
        task_defs("scan"))
    sim.start({"rows": [{"v": i} for i in range(600)]})
    with pytest.raises(WorkLimit):
        sim.run()
