"""The Conductor corpus (`../shared/conductor-corpus/`, read in place) and what running it needs:
the files not accepted and why, the sub-workflows and task types named in it but defined in none
of its files, how each definition is run (RUNS), the definitions a file's run can see, and the
generic worker's answer. tests/unit/conductor/test_conductor_corpus.py runs it in the simulator,
tests/integration/conductor/test_conductor_corpus_node.py on a real node."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.core import statuses as st
from orchestrator.core.definitions import (DELEGATED_KINDS, HTTP_KINDS, check_workflow_def, normalise_task_def,
                                           referenced_task_names, referenced_workflow_names)


def _corpus_dir() -> Path:
    """CONDUCTOR_CORPUS, else `shared/conductor-corpus` beside the checkout (where the workplace
    keeps it), else the workplace's own copy: a clone elsewhere (CI's) still finds it."""
    if os.environ.get("CONDUCTOR_CORPUS"):
        return Path(os.environ["CONDUCTOR_CORPUS"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "conductor-corpus"
    return beside if beside.is_dir() else Path("/work/shared/conductor-corpus")


CORPUS = _corpus_dir()

NOT_ACCEPTED: dict[str, str] = {
    "conductor-oss__rest__src__main__resources__kitchensink__wf1":
        "schemaVersion 1 (input paths written without ${...}): refused, as Conductor 3 refuses schemaVersion 1",
    "conductor-oss__test-harness__src__test__resources__do_while_timeline_ui_demo":
        "its jq program writes strings in single quotes, which jq has no syntax for: refused at registration "
        "(Conductor accepts it and fails the task when it runs)",
}
MADE_UP_WORKFLOWS: dict[str, str] = {
    "sub_workflow": "the test harness registers it in its Java test code",
    "integration_test_wf": "the test harness registers it in its Java test code",
    "failure_workflow": "the failure workflow of two test-harness files, registered in Java test code",
    "sub_flow_1": "the kitchensink's sub-workflow, defined in another resource of the REST module",
    "wait_signal_test": "the e2e signal test registers it in its Java test code",
}
CUSTOM_TYPES: dict[str, str] = {
    "USER_TASK": "a system task of Conductor's test harness (UserTask), not of Conductor",
    "BLOCKING_SYSTEM_TASK": "a system task of Conductor's test harness, not of Conductor",
}
"""Run as Conductor runs a type it does not know: on workers of that type, under the task's definition."""


@dataclass(frozen=True)
class Run:
    """How one definition is run: its input, what signals complete its waits with, the status
    Conductor would end it in, and why that status (when it is not COMPLETED)."""

    input: dict[str, Any] = field(default_factory=dict)
    signal: dict[str, Any] = field(default_factory=dict)
    expect: str = st.COMPLETED
    why: str = ""


P = "conductor-oss__"
RUNS: dict[tuple[str, str], Run] = {
    (P + "e2e__src__test__resources__metadata__do_while_keep_last_n_fix", "keep_last_n_example"):
        Run(input={"batch": [["u1", "u2"], ["u3"], ["u4"], ["u5", "u6"]]}),
    (P + "e2e__src__test__resources__metadata__do_while_keep_last_n_fix", "keep_last_n_example_2"):
        Run(input={"batch": [["u1"], ["u2"], ["u3"]]}),
    (P + "e2e__src__test__resources__metadata__do_while_wait_switch_iteration_test",
     "do_while_wait_switch_iteration_test"):
        Run(signal={"result": "a"}),   # the signal that ends the loop (its SWITCH reads the WAIT's output)
    (P + "test-harness__src__test__resources__hierarchical_fork_join_swf", "hierarchical_fork_join_swf"):
        Run(input={"subwf": "sub_workflow"}),   # the sub-workflow's name comes from the input
    (P + "test-harness__src__test__resources__nested_fork_join_swf", "nested_fork_join_swf"):
        Run(input={"subwf": "sub_workflow"}),
    (P + "test-harness__src__test__resources__nested_fork_join_with_sub_workflow_integration_test",
     "FanInOutNestedSubWorkflowTest"):
        Run(input={"case": "a"}),   # its JOIN waits for t20, which only case 'a' runs (else it waits forever)
    (P + "test-harness__src__test__resources__do_while_high_iteration_test", "do_while_high_iteration_test"):
        Run(input={"loop": 300}),
    (P + "test-harness__src__test__resources__do_while_as_subtask_integration_test", "Do_While_SubTask"):
        Run(input={"loop": 3}),
    (P + "test-harness__src__test__resources__do_while_multiple_integration_test", "Do_While_Multiple"):
        Run(input={"loop": 2, "loop2": 3}),
    (P + "test-harness__src__test__resources__do_while_five_loop_over_integration_test",
     "do_while_five_loop_over_integration_test"):
        Run(input={"loop": 2}),
    (P + "test-harness__src__test__resources__do_while_system_tasks", "do_while_system_tasks"):
        Run(input={"loop": 3}),
    (P + "test-harness__src__test__resources__do_while_sub_workflow_integration_test", "Do_While_Sub_Workflow"):
        Run(input={"loop": 2}),
    (P + "test-harness__src__test__resources__do_while_iteration_fix_test", "Do_While_Workflow_Iteration_Fix"):
        Run(input={"loop": 4}),
    (P + "e2e__src__test__resources__metadata__stackoverflower", "stackoverflower"):
        Run(input={"n": 250}),
    (P + "test-harness__src__test__resources__do_while_cleanup_demo", "do_while_cleanup_demo"):
        Run(input={"max_iterations": 10}, expect=st.FAILED,
            why="its INLINE scripts read $.do_while_loop_ref, which is not among their inputParameters: the script "
                "throws a TypeError and the task fails, as in Conductor (INLINE sees only its inputs)"),
    (P + "test-harness__src__test__resources__terminate_task_failed_workflow_integration",
     "test_terminate_task_failed_wf"):
        Run(input={"a": 1}, expect=st.FAILED, why="a TERMINATE task ends it with terminationStatus FAILED"),
    (P + "test-harness__src__test__resources__test_task_failed_sub_workflow", "test_task_failed_sub_wf"):
        Run(expect=st.FAILED, why="a TERMINATE task ends it with terminationStatus FAILED"),
    (P + "test-harness__src__test__resources__test_task_failed_parent_workflow", "test_task_failed_parent_wf"):
        Run(expect=st.FAILED, why="its sub-workflow ends FAILED (TERMINATE), which fails the SUB_WORKFLOW task"),
    (P + "test-harness__src__test__resources__terminate_task_terminated_status_in_do_while_test",
     "test_terminate_task_terminated_in_do_while"):
        Run(expect=st.TERMINATED, why="a TERMINATE task inside the loop ends it with terminationStatus TERMINATED"),
    (P + "test-harness__src__test__resources__terminate_task_terminated_status_test", "test_terminate_task_terminated"):
        Run(expect=st.TERMINATED, why="a TERMINATE task ends it with terminationStatus TERMINATED"),
}


# ---------------------------------------------------------------- the corpus and what it needs registered

@dataclass
class Corpus:
    files: dict[str, list[dict[str, Any]]]          # file stem -> its definitions, as written
    registry: dict[str, dict[int, dict[str, Any]]]  # name -> version -> definition (every file, made-up ones)
    task_defs: dict[str, Any]


@cache
def corpus() -> Corpus:
    assert CORPUS.is_dir(), f"the Conductor corpus is missing: {CORPUS} (set CONDUCTOR_CORPUS)"
    files: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(CORPUS.glob("*.json")):
        document = json.loads(path.read_text())
        files[path.stem] = document if isinstance(document, list) else [document]
    registry: dict[str, dict[int, dict[str, Any]]] = {}
    names: set[str] = {"fail_on_purpose"}   # the cpewf file's dynamic task, named only in data
    wanted: set[str] = set()
    for definitions in files.values():
        for definition in definitions:
            registry.setdefault(definition["name"], {}).setdefault(definition.get("version", 1), definition)
            names |= referenced_task_names(definition)
            wanted |= referenced_workflow_names(definition)
    names -= set(CUSTOM_TYPES)   # a task definition named after the task, not after its type, as in Conductor
    missing = wanted - set(registry)
    assert missing == set(MADE_UP_WORKFLOWS), f"workflows named but defined nowhere: {sorted(missing)}"
    for name in MADE_UP_WORKFLOWS:
        registry[name] = {1: {"name": name, "version": 1, "schemaVersion": 2,
                              "tasks": [{"name": "stub_task", "taskReferenceName": "stub", "type": "SIMPLE"}]}}
    names.add("stub_task")
    task_defs = {name: normalise_task_def({"name": name, "retryCount": 0, "retryDelaySeconds": 0}) for name in names}
    return Corpus(files, registry, task_defs)


def registered(stem: str) -> dict[str, dict[int, dict[str, Any]]]:
    """Every definition, this file's own winning where a name and version repeat across files."""
    merged = {name: dict(versions) for name, versions in corpus().registry.items()}
    for definition in corpus().files[stem]:
        merged.setdefault(definition["name"], {})[definition.get("version", 1)] = definition
    return merged


def latest(merged: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: versions[max(versions)] for name, versions in merged.items()}


@cache
def accepted(stem: str) -> tuple[bool, tuple[str, ...]]:
    """Whether every definition of the file is accepted as written, and the problems found."""
    workflow_defs = latest(registered(stem))
    problems: list[str] = []
    for definition in corpus().files[stem]:
        problems += check_workflow_def(definition, corpus().task_defs, workflow_defs).problems
    return not problems, tuple(problems)


def generic_output(kind: str, task_input: Any) -> dict[str, Any]:
    """What the generic worker answers a task of this kind with (the node test's worker too): an
    HTTP-like response for the I/O types, an echo of the input for the others."""
    if kind in HTTP_KINDS + DELEGATED_KINDS:   # the simulator has no network: a response stands in
        return {"response": {"statusCode": 200, "reasonPhrase": "OK", "headers": {}, "body": {"echo": task_input}}}
    return {"echo": task_input}
