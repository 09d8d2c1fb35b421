"""Real Conductor workflow definitions, exactly as exported, are accepted and run as Conductor runs them.

The corpus is `../shared/conductor-corpus/` (107 files from conductor-oss/conductor and
Netflix/conductor, see its SOURCES.tsv), read in place, never copied. Every definition of every
file is checked as written; every accepted one is run in the simulator (tests/sim.py) with a
generic worker that completes every worker task (SIMPLE, and HTTP and the other I/O types,
which run on workers here) with a plausible output, and a generic signaller that completes a
WAIT or HUMAN task waiting for a signal, the way a person or another system would. The run must
end where Conductor would end it.

What the test supplies besides the files, as a Conductor user would have it registered:
- a task definition for every task name the definitions use (the corpus holds none; Conductor
  would not run them without one either);
- MADE_UP_WORKFLOWS: sub-workflows and failure workflows named in the corpus but defined in
  none of its files (they live in the test code of their repositories), as one-task stubs;
- nothing for CUSTOM_TYPES, task types that are not Conductor's but plugins of its test harness:
  as Conductor runs a task of a type it does not know (a user-defined task), they run on workers
  of that type under the task definition named after the task (made up like every other);
- RUNS: the input (and signal output) a run needs to take the path its authors meant, and the
  end status when it is not COMPLETED, each with its reason.

Files that are not accepted, or not run to Conductor's status, are listed in NOT_ACCEPTED and
NOT_RUN, one line of reason each; both rates must stay at or above 95 %. The corpus, its loader
and those lists (but NOT_RUN) are in tests/conductor_corpus.py, which the node's run of the corpus
shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest

from conductor_corpus import CORPUS, NOT_ACCEPTED, RUNS, P, Run, accepted, corpus, generic_output, latest, registered
from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.definitions import check_workflow_def
from sim import Sim

TARGET = 0.95
NOT_RUN: dict[str, str] = {}   # accepted files that do not end where Conductor would: none


@cache
def snapshot(stem: str) -> dict[str, Any]:
    """What a run of this file's definitions can start: every accepted definition, normalised,
    as "name:version" (and "name:0" for the latest)."""
    merged = registered(stem)
    workflow_defs = latest(merged)
    out: dict[str, Any] = {}
    for name, versions in merged.items():
        for version, definition in versions.items():
            check = check_workflow_def(definition, corpus().task_defs, workflow_defs)
            if not check.problems:
                out[f"{name}:{version}"] = check.definition
        ready = [v for v in versions if f"{name}:{v}" in out]
        if ready:
            out[f"{name}:0"] = out[f"{name}:{max(ready)}"]
    return out


# ---------------------------------------------------------------- the generic worker and signaller

def worker(task: m.TaskState) -> tuple[str, Any]:
    """Completes every worker task with its generic output."""
    return st.TASK_COMPLETED, generic_output(task.spec.kind, task.spec.input)


def waiting_for_signals(sim: Sim) -> list[tuple[str, m.TaskState]]:
    return [(workflow_id, task) for workflow_id, workflow in sim.workflows.items() if workflow.status == st.RUNNING
            for task in workflow.tasks if task.spec.kind in ("WAIT", "HUMAN")
            and task.runtime.status == st.IN_PROGRESS and not task.spec.extra.get("until")]


def drive(sim: Sim, run: Run) -> m.WorkflowState:
    """Run until the workflow ends or nothing moves; a WAIT or HUMAN waiting for a signal gets
    one (with `run.signal` as its output) whenever nothing else can move."""
    sim.start(run.input)
    for _ in range(100):
        state = sim.run(worker, max_steps=50_000)
        waiting = waiting_for_signals(sim)
        if state.status in st.TERMINAL_WORKFLOW or not waiting:
            return state
        for workflow_id, task in waiting:
            sim.signal(task.spec.key, dict(run.signal), workflow_id=workflow_id)
    return sim.workflows["wf"]


def simulate(stem: str, definition: dict[str, Any]) -> tuple[Sim, m.WorkflowState]:
    sim = Sim(definition, corpus().task_defs, normalised_workflows=snapshot(stem))
    return sim, drive(sim, RUNS.get((stem, definition["name"]), Run()))


@cache
def ran_as_conductor(stem: str) -> bool:
    """Whether every definition of the (accepted) file ends where Conductor would end it."""
    return accepted(stem)[0] and all(simulate(stem, d)[1].status == RUNS.get((stem, d["name"]), Run()).expect
                                     for d in corpus().files[stem])


def all_runs() -> list[Any]:
    return [pytest.param(stem, index, id=f"{stem.split('__')[-1]}[{index}]")
            for stem, definitions in corpus().files.items() for index in range(len(definitions))]


# ---------------------------------------------------------------- acceptance

def test_the_corpus_is_all_there() -> None:
    sources = (CORPUS / "SOURCES.tsv").read_text().splitlines()[1:]
    assert len(corpus().files) == len(sources) == 107
    assert set(NOT_ACCEPTED) <= set(corpus().files) and set(NOT_RUN) <= set(corpus().files)
    assert all(key[0] in corpus().files for key in RUNS)


@pytest.mark.parametrize("stem", sorted(corpus().files), ids=lambda stem: stem.split("__")[-1])
def test_each_file_is_accepted_as_written_unless_listed(stem: str) -> None:
    ok, problems = accepted(stem)
    if stem in NOT_ACCEPTED:
        assert not ok, f"{stem} is accepted now: take it off NOT_ACCEPTED"
    else:
        assert ok, "\n".join(problems)


def test_the_files_not_accepted_are_refused_for_the_reason_given() -> None:
    kitchensink, timeline = (accepted(stem)[1] for stem in NOT_ACCEPTED)
    assert any("'schemaVersion' must be 2" in p for p in kitchensink), kitchensink
    assert len(timeline) == 1 and "queryExpression' does not compile" in timeline[0], timeline


def test_acceptance_rate() -> None:
    files = corpus().files
    rate = sum(accepted(stem)[0] for stem in files) / len(files)
    definitions = [(stem, d) for stem, ds in files.items() for d in ds]
    by_definition = sum(not check_workflow_def(d, corpus().task_defs, latest(registered(stem))).problems
                        for stem, d in definitions) / len(definitions)
    print(f"\naccepted as written: {rate:.1%} of {len(files)} files, {by_definition:.1%} of {len(definitions)} "
          "definitions")
    assert rate >= TARGET and rate == 1 - len(NOT_ACCEPTED) / len(files)


def test_types_that_are_not_conductors_run_on_workers_of_that_type() -> None:
    sim, state = run_of("conditional_system_task_workflow_integration_test")
    assert state.status == st.COMPLETED
    stem = next(s for s in corpus().files if s.endswith("rate_limited_system_task_workflow_integration_test"))
    sim, state = simulate(stem, corpus().files[stem][0])
    task = sim.task("test_task_with_rateLimits")
    assert state.status == st.COMPLETED and task.spec.kind == task.spec.task_type == "USER_TASK"
    assert "USER_TASK" not in corpus().task_defs   # its task definition is the task's: test_task_with_rateLimits


def test_conductor_fields_are_warnings_never_errors() -> None:
    """Metadata, task-definition fields and fields left at their defaults are kept or dropped
    with a reason, never refused."""
    stem = P + "e2e__src__test__resources__metadata__do_while_early_script_eval_wf"
    check = check_workflow_def(corpus().files[stem][0], corpus().task_defs, latest(registered(stem)))
    assert not check.problems
    text = "\n".join(check.warnings)
    assert "'retryCount' 50000 is above the limit of 100; 100 is used" in text   # an embedded task definition
    assert "fields of other task types left at their defaults were dropped: asyncComplete" in text
    assert "stops after 1000 iterations" in text
    definition: Mapping[str, Any] = check.definition   # WorkflowDef does not list the fields kept as written
    assert definition["ownerEmail"] == "test@conductor.io" and definition["createTime"] == 1697213475858  # kept
    embedded = definition["tasks"][0]["taskDefinition"]
    assert embedded["inputKeys"] == ["resource_pool_name", "sublimit_id"] and embedded["retryDelaySeconds"] == 60


# ---------------------------------------------------------------- runs

@pytest.mark.parametrize("stem,index", all_runs())
def test_each_definition_runs_to_the_status_conductor_would_reach(stem: str, index: int) -> None:
    if not accepted(stem)[0]:
        assert stem in NOT_ACCEPTED
        pytest.skip(f"not accepted: {NOT_ACCEPTED[stem]}")
    definition = corpus().files[stem][index]
    run = RUNS.get((stem, definition["name"]), Run())
    sim, state = simulate(stem, definition)
    assert state.status == run.expect, (state.status, state.reason, sim.statuses())


def test_run_rate() -> None:
    files = corpus().files
    rate = sum(ran_as_conductor(stem) for stem in files) / len(files)
    print(f"\nran to Conductor's end status: {rate:.1%} of {len(files)} files")
    assert rate >= TARGET
    assert {stem for stem in files if not ran_as_conductor(stem)} == set(NOT_ACCEPTED) | set(NOT_RUN)


def run_of(stem_tail: str, name: str | None = None) -> tuple[Sim, m.WorkflowState]:
    stem = next(s for s in corpus().files if s.endswith(stem_tail))
    definitions = corpus().files[stem]
    definition = definitions[0] if name is None else next(d for d in definitions if d["name"] == name)
    return simulate(stem, definition)


def test_a_dynamic_fork_task_gets_its_own_id_as_cpewf_task_id() -> None:
    sim, state = run_of("cpewf_task_id_dyn_fork_wf")
    assert state.status == st.COMPLETED
    branch = sim.task("fail_on_purpose_ref")
    assert branch.spec.input["task_id"] == branch.task_id


def test_loop_outputs_keep_the_last_n_iterations_and_items_are_visible() -> None:
    sim, state = run_of("do_while_keep_last_n_fix", "keep_last_n_example")
    loop = sim.task("do_while_batch_creation_ref")
    assert state.status == st.COMPLETED and loop.output is not None and loop.output["iteration"] == 4
    assert sorted(k for k in loop.output if k.isdigit()) == ["3", "4"]          # keepLastN: 2
    assert sim.task("dynamic_fork_prep_ref__4").spec.input["urls"] == ["u5", "u6"]
    children = [w for w in sim.workflows.values() if w.name == "wait"]
    assert len(children) == 6 and all(c.status == st.COMPLETED for c in children)   # a sub-workflow per url


def test_do_while_iteration_outputs_are_addressable_by_number() -> None:
    sim, state = run_of("scheduler__examples__dowhile-workflow")
    assert state.status == st.COMPLETED and state.output == {"sampledAt": None, "iterations": 3}
    assert "fetch_current_time" in (sim.task("poll_loop").output or {})["3"]


def test_input_template_gives_defaults_and_cpewf_task_id_resolves() -> None:
    sim, state = run_of("simple_workflow_1_input_template_integration_test")
    assert state.output is not None and state.output["param1"] == {"nested_object": {"nested_key": "nested_value"}}
    task = sim.task("t1")
    assert task.spec.input["p3"] == task.task_id and task.spec.input["p2"] == ["list", "of", "strings"]


def test_task_fields_other_than_input_and_output_resolve() -> None:
    sim, state = run_of("end_time_workflow")
    assert state.status == st.COMPLETED
    end = sim.task("simple_ref").runtime.ended_at_ms
    assert end and sim.task("inline_ref").output == {"result": end}
    assert sim.task("simple_2_ref").spec.input == {"endTime": end}


def test_many_iterations_run_without_trouble() -> None:
    sim, state = run_of("do_while_high_iteration_test")
    assert state.status == st.COMPLETED and (sim.task("loopTask").output or {})["iteration"] == 300


def test_the_saga_failure_workflow_gets_the_failed_execution_and_undoes_what_completed() -> None:
    """saga_order_fulfillment fails on its last HTTP step; Conductor starts its failureWorkflow
    with the failed execution, whose jq finds the completed steps and refunds/releases them."""
    stem = next(s for s in corpus().files if s.endswith("saga-order-fulfillment"))
    sim = Sim(corpus().files[stem][0], corpus().task_defs, normalised_workflows=snapshot(stem))
    sim.start({"orderId": "A-1", "amount": 10})

    def declines_shipping(task: m.TaskState) -> tuple[str, Any]:
        if task.spec.ref == "book_shipment":
            return st.TASK_FAILED, "carrier refused"
        return worker(task)
    state = sim.run(declines_shipping, max_steps=1000, every_workflow=True)
    assert state.status == st.FAILED and "book_shipment" in state.reason
    compensation = next(w for w in sim.workflows.values() if w.name == "saga_order_compensation")
    assert compensation.status == st.COMPLETED, compensation.reason
    assert compensation.output is not None
    assert compensation.output["paymentRefunded"] is True and compensation.output["inventoryReleased"] is True
    assert compensation.output["compensatedOrder"] == "A-1"
    kinds = {t.spec.ref: t.spec.task_type for t in compensation.tasks}
    assert kinds["refund_payment"] == "HTTP" and kinds["release_inventory"] == "HTTP"   # run by HTTP workers
