"""The workflow language, decided purely (no servers): every task kind and every failure path.

The cases that read best as data are scenario files (scenarios/*.yaml, run by test_scenarios.py)."""

from __future__ import annotations

import pytest

from orchestrator.core import statuses as st
from orchestrator.core.definitions import validate_workflow_def
from sim import START, Sim, echo, task_defs

DEFS = task_defs("a", "b", "c", "book", "cancel", "charge", "refund", retryCount=0)


def simple(ref: str, name: str = "a", **extra):
    return {"name": name, "taskReferenceName": ref, **extra}


def wf(*tasks, **extra):
    return {"name": "t", "tasks": list(tasks), **extra}


def failing(*keys: str, status: str = st.TASK_FAILED):
    def handler(task):
        if task.spec.key in keys:
            return status, f"{task.spec.key} broke"
        return echo(task)
    return handler


# ---------------------------------------------------------------- simple tasks and options

def test_start_delay_holds_the_first_attempt_back():
    sim = Sim(wf(simple("x", startDelay=30)), DEFS)
    sim.start()
    sim.decide("wf")
    task = sim.task("x")
    assert not task.runtime.queued and task.runtime.ready_at_ms == START + 30_000
    assert sim.run().status == st.COMPLETED
    assert sim.now >= START + 30_000


def test_task_timeout_policy_time_out_wf_times_the_workflow_out():
    defs = {**DEFS, **task_defs("slow", timeoutSeconds=5, timeoutPolicy="TIME_OUT_WF", retryCount=3)}
    sim = Sim(wf(simple("x", "slow")), defs)
    sim.start()
    sim.decide("wf")
    sim.task("x").runtime.status = st.IN_PROGRESS   # a worker took it and keeps heartbeating
    sim.task("x").runtime.started_at_ms = sim.now
    sim.task("x").runtime.queued = False
    sim.now += 5_000
    sim.decide("wf")
    assert sim.workflows["wf"].status == st.TIMED_OUT
    assert sim.task("x").runtime.status == st.TASK_TIMED_OUT


def test_workflow_timeout():
    sim = Sim(wf(simple("x"), timeoutSeconds=10), DEFS)
    sim.start()
    sim.decide("wf")
    sim.now += 10_000
    sim.decide("wf")
    state = sim.workflows["wf"]
    assert state.status == st.TIMED_OUT and "timeoutSeconds" in state.reason
    assert sim.task("x").runtime.status == st.CANCELED


# ---------------------------------------------------------------- waiting

def test_wait_for_a_duration():
    sim = Sim(wf({"type": "WAIT", "taskReferenceName": "pause", "duration": 60}, simple("after")), DEFS)
    sim.start()
    assert sim.run().status == st.COMPLETED
    assert sim.task("after").runtime.started_at_ms >= START + 60_000


def test_wait_until_a_time_from_the_input():
    sim = Sim(wf({"type": "WAIT", "taskReferenceName": "pause", "until": "${workflow.input.at}"}), DEFS)
    sim.start({"at": START + 5_000})
    assert sim.run().status == st.COMPLETED and sim.now == START + 5_000


# ---------------------------------------------------------------- branching

FORK = {"type": "FORK_JOIN", "taskReferenceName": "fork",
        "forkTasks": [[simple("l1"), simple("l2")], [simple("r1")]]}


def test_fork_join_runs_branches_in_parallel_and_joins_outputs():
    sim = Sim(wf(FORK, {"type": "JOIN", "taskReferenceName": "join", "joinOn": ["l2", "r1"]},
                 simple("after", inputParameters={"j": "${join.output}"})), DEFS)
    sim.start()
    sim.decide("wf")
    queued = [k for k, s in sim.statuses().items() if s == st.SCHEDULED]
    assert queued == ["l1", "r1"]        # both branches started at once
    assert sim.run().status == st.COMPLETED
    assert set(sim.task("after").spec.input["j"]) == {"l2", "r1"}


def test_join_on_a_subset_does_not_wait_for_other_branches():
    sim = Sim(wf(FORK, {"type": "JOIN", "taskReferenceName": "join", "joinOn": ["r1"]}, simple("after")), DEFS)
    sim.start()
    sim.decide("wf")
    task = sim.task("r1")
    task.runtime.status, task.output = st.TASK_COMPLETED, {"r": 1}
    sim.decide("wf")
    assert sim.task("join").runtime.status == st.TASK_COMPLETED
    assert sim.task("after").runtime.status == st.SCHEDULED
    assert sim.task("l1").runtime.status == st.SCHEDULED
    assert sim.run().status == st.COMPLETED     # the workflow still waits for the un-joined branch


def test_failed_branch_fails_the_workflow_and_cancels_the_other():
    sim = Sim(wf(FORK, {"type": "JOIN", "taskReferenceName": "join"}), DEFS)
    sim.start()
    sim.decide("wf")
    task = sim.task("r1")
    task.runtime.status, task.runtime.reason = st.TASK_FAILED, "boom"
    sim.decide("wf")
    assert sim.workflows["wf"].status == st.FAILED
    assert sim.task("l1").runtime.status == st.CANCELED


def test_dynamic_fork_from_task_specs():
    sim = Sim(wf(simple("plan"), {
        "type": "FORK_JOIN_DYNAMIC", "taskReferenceName": "dyn",
        "inputParameters": {"tasks": "${plan.output.tasks}", "inputs": "${plan.output.inputs}"},
        "dynamicForkTasksParam": "tasks", "dynamicForkTasksInputParamName": "inputs"},
        {"type": "JOIN", "taskReferenceName": "join"}), DEFS)

    def handler(task):
        if task.spec.key == "plan":
            return st.TASK_COMPLETED, {"tasks": [{"name": "b", "taskReferenceName": "d1"},
                                                {"name": "c", "taskReferenceName": "d2"}],
                                      "inputs": {"d1": {"x": 1}, "d2": {"x": "${not resolved}"}}}
        return echo(task)

    sim.start()
    assert sim.run(handler).status == st.COMPLETED
    assert sim.task("d1").spec.task_type == "b" and sim.task("d2").spec.input == {"x": "${not resolved}"}
    assert set(sim.output("join")) == {"d1", "d2"}


def test_dynamic_fork_over_an_input_list():
    sim = Sim(wf({"type": "FORK_JOIN_DYNAMIC", "taskReferenceName": "each", "forkTaskName": "a",
                  "forkTaskInputs": "${workflow.input.items}"},
                 {"type": "JOIN", "taskReferenceName": "join"}), DEFS)
    sim.start({"items": [{"n": 1}, {"n": 2}, 3]})
    assert sim.run().status == st.COMPLETED
    assert [sim.task(f"each_{i}").spec.input for i in range(3)] == [{"n": 1}, {"n": 2}, {"item": 3}]


def test_dynamic_fork_with_an_unknown_task_fails_with_a_reason():
    sim = Sim(wf({"type": "FORK_JOIN_DYNAMIC", "taskReferenceName": "dyn", "dynamicForkTasksParam": "t",
                  "dynamicForkTasksInputParamName": "i", "inputParameters": {"t": [{"name": "ghost",
                  "taskReferenceName": "g"}], "i": {}}}, {"type": "JOIN", "taskReferenceName": "join"}), DEFS)
    sim.start()
    done = sim.run()
    assert done.status == st.FAILED and "ghost" in done.reason


@pytest.mark.parametrize("amount,expected", [(50, "small"), (500, "big"), (None, "default")])
def test_switch_by_expression_with_default(amount, expected):
    sim = Sim(wf({"type": "SWITCH", "taskReferenceName": "sw", "evaluatorType": "expression",
                  "expression": "$.amount == null ? 'none' : ($.amount > 100 ? 'big' : 'small')",
                  "inputParameters": {"amount": "${workflow.input.amount}"},
                  "decisionCases": {"big": [simple("big")], "small": [simple("small")]},
                  "defaultCase": [simple("default")]}), DEFS)
    sim.start({"amount": amount} if amount is not None else {})
    assert sim.run().status == st.COMPLETED
    assert [k for k in sim.statuses() if k != "sw"] == [expected]


def test_switch_by_value():
    sim = Sim(wf({"type": "SWITCH", "taskReferenceName": "sw", "expression": "kind",
                  "inputParameters": {"kind": "${workflow.input.kind}"},
                  "decisionCases": {"card": [simple("card")], "true": [simple("yes")]}}), DEFS)
    sim.start({"kind": "card"})
    sim.run()
    assert "card" in sim.statuses() and sim.output("sw")["selectedCase"] == "card"


def test_do_while_over_items_exposes_item_and_index():
    sim = Sim(wf({"type": "DO_WHILE", "taskReferenceName": "loop", "items": "${workflow.input.skus}",
                  "loopOver": [simple("ship", inputParameters={"sku": "${loop.output.item}",
                                                               "i": "${loop.output.index}"})]}), DEFS)
    sim.start({"skus": ["A", "B"]})
    assert sim.run().status == st.COMPLETED
    assert sim.task("ship__1").spec.input == {"sku": "A", "i": 0}
    assert sim.task("ship__2").spec.input == {"sku": "B", "i": 1}


def test_do_while_stops_at_its_iteration_cap():
    sim = Sim(wf({"type": "DO_WHILE", "taskReferenceName": "loop", "loopCondition": "true",
                  "maxIterations": 4, "loopOver": [{"type": "NOOP", "taskReferenceName": "n"}]}), DEFS)
    sim.start()
    assert sim.run().status == st.COMPLETED
    assert sim.task("loop").output == {"iteration": 4, "stoppedByCap": True}


# ---------------------------------------------------------------- sub-workflows and failure workflows

CHILD = {"name": "child", "tasks": [simple("inner", inputParameters={"v": "${workflow.input.v}"})],
         "outputParameters": {"got": "${inner.output.echo.v}"}}


def test_sub_workflow_runs_as_its_own_workflow_and_returns_its_output():
    sim = Sim(wf({"type": "SUB_WORKFLOW", "taskReferenceName": "sub", "subWorkflowParam": {"name": "child"},
                  "inputParameters": {"v": 7}}, simple("after", inputParameters={"r": "${sub.output.got}"})),
              DEFS, {"child:0": CHILD})
    sim.start()
    assert sim.run().status == st.COMPLETED
    child_id = sim.task("sub").spec.extra["child"]
    assert sim.workflows[child_id].status == st.COMPLETED and sim.workflows[child_id].parent.startswith("wf|")
    assert sim.task("after").spec.input == {"r": 7}


def test_failed_sub_workflow_fails_the_parent_and_terminating_the_parent_ends_the_child():
    sim = Sim(wf({"type": "SUB_WORKFLOW", "taskReferenceName": "sub", "subWorkflowParam": {"name": "child"}}),
              DEFS, {"child:0": CHILD})
    sim.start()
    assert sim.run(failing("inner")).status == st.FAILED
    assert "sub-workflow" in sim.workflows["wf"].reason

    sim2 = Sim(wf({"type": "SUB_WORKFLOW", "taskReferenceName": "sub", "subWorkflowParam": {"name": "child"}}),
               DEFS, {"child:0": CHILD})
    sim2.start()
    sim2.decide("wf")
    child_id = sim2.task("sub").spec.extra["child"]
    sim2.workflows["wf"].status = st.TERMINATED
    sim2.decide("wf")
    assert sim2.workflows[child_id].status == st.TERMINATED


def test_failure_workflow_starts_with_the_failed_workflow_details():
    sim = Sim(wf(simple("x"), failureWorkflow="on_failure"), DEFS,
              {"on_failure:0": {"name": "on_failure", "tasks": [simple("alert")]}})
    sim.start({"order": 1})
    assert sim.run(failing("x")).status == st.FAILED
    [handler_id] = [w for w in sim.workflows if w.startswith("wf.failure.")]
    handler_wf = sim.workflows[handler_id]
    assert handler_wf.input["workflowId"] == "wf" and handler_wf.input["failedTasks"] == ["x"]
    assert handler_wf.input["input"] == {"order": 1} and "x" in handler_wf.input["reason"]


# ---------------------------------------------------------------- compensation (saga)

SAGA = wf(
    simple("flight", "book", compensation={"name": "cancel", "inputParameters": {"id": "${flight.output.echo}"}}),
    simple("hotel", "book", compensation={"name": "cancel", "inputParameters": {"id": "${hotel.output.echo}"}}),
    simple("payment", "charge"),
)


def test_saga_compensates_completed_steps_in_reverse_order():
    sim = Sim(SAGA, DEFS)
    sim.start()
    done = sim.run(failing("payment"))
    assert done.status == st.COMPENSATED and "payment" in done.reason
    ran = [key for _, key, _ in sim.executions]
    assert ran == ["flight", "hotel", "payment", "hotel__compensation", "flight__compensation"]
    assert sim.task("hotel__compensation").spec.input == {"id": sim.output("hotel")["echo"]}


def test_compensation_that_fails_ends_compensation_failed():
    sim = Sim(SAGA, DEFS)
    sim.start()
    done = sim.run(failing("payment", "hotel__compensation"))
    assert done.status == st.COMPENSATION_FAILED and "compensation of 'hotel'" in done.reason
    assert "flight__compensation" not in sim.statuses()


def test_terminate_with_compensation_requested():
    sim = Sim(SAGA, DEFS)
    sim.start()
    sim.decide("wf")
    sim.work(echo)           # flight completes
    sim.decide("wf")         # hotel scheduled
    sim.workflows["wf"].status = st.COMPENSATING   # what TERMINATE with compensate does, with a wake-up
    sim.wakes["wf"] = sim.now
    done = sim.run()
    assert done.status == st.COMPENSATED
    assert sim.task("hotel").runtime.status == st.CANCELED
    assert sim.task("flight__compensation").runtime.status == st.TASK_COMPLETED


# ---------------------------------------------------------------- operator commands

def test_retry_gives_the_failed_task_a_fresh_attempt():
    sim = Sim(wf(simple("x"), simple("y")), DEFS)
    sim.start()
    assert sim.run(failing("x")).status == st.FAILED
    sim.command("retry", status=st.RUNNING)
    done = sim.run()
    assert done.status == st.COMPLETED and done.reason == ""
    assert [a for _, k, a in sim.executions if k == "x"] == [0, 1]


def test_restart_runs_again_from_the_start():
    sim = Sim(wf(simple("x")), DEFS)
    sim.start()
    sim.run()
    sim.command("restart", status=st.RUNNING)
    assert sim.run().status == st.COMPLETED
    assert [k for _, k, _ in sim.executions] == ["x", "x"] and len(sim.workflows["wf"].tasks) == 1


def test_rerun_from_a_task_with_new_input():
    sim = Sim(wf(simple("x"), simple("y"), simple("z")), DEFS)
    sim.start()
    sim.run()
    sim.command("rerun", status=st.RUNNING, key="y", input={"fixed": True})
    assert sim.run().status == st.COMPLETED
    assert [k for _, k, _ in sim.executions] == ["x", "y", "z", "y", "z"]
    assert sim.task("y").spec.input == {"fixed": True}


def test_paused_workflow_schedules_nothing_until_resumed():
    sim = Sim(wf(simple("x"), simple("y")), DEFS)
    sim.start()
    sim.decide("wf")
    sim.workflows["wf"].status = st.PAUSED
    sim.work(echo)
    sim.decide("wf")
    assert "y" not in sim.statuses()
    sim.workflows["wf"].status = st.RUNNING
    assert sim.run().status == st.COMPLETED


# ---------------------------------------------------------------- validation of the language

@pytest.mark.parametrize("task,fragment", [
    ({"type": "SWITCH", "taskReferenceName": "s", "evaluatorType": "expression", "expression": "$.a >",
      "decisionCases": {}}, "task 's' (tasks[0]): 'expression'"),
    ({"type": "DO_WHILE", "taskReferenceName": "l", "loopOver": [simple("x")]}, "'loopCondition'"),
    ({"type": "DO_WHILE", "taskReferenceName": "l", "loopCondition": "true", "maxIterations": 0,
      "loopOver": [simple("x")]}, "'maxIterations'"),
    ({"type": "JOIN", "taskReferenceName": "j"}, "must directly follow a FORK_JOIN"),
    ({"type": "FORK_JOIN", "taskReferenceName": "f", "forkTasks": [[simple("x", "nope")]]},
     "task 'x' (task 'f' (tasks[0]).forkTasks[0][0]): no task definition named 'nope'"),
    ({"type": "SUB_WORKFLOW", "taskReferenceName": "s", "subWorkflowParam": {"name": "missing"}},
     "no workflow definition named 'missing'"),
    ({"type": "WAIT", "taskReferenceName": "w", "duration": 1, "until": 5}, "not both"),
    ({"type": "INLINE", "taskReferenceName": "i", "expression": "__import__('os')"}, "task 'i' (tasks[0])"),
    ({"type": "TERMINATE", "taskReferenceName": "t", "terminationStatus": "MAYBE"}, "'terminationStatus'"),
    ({"name": "a", "taskReferenceName": "x", "compensation": {"name": "ghost"}}, "'compensation'"),
    ({"name": "a", "taskReferenceName": "x__1"}, "no '__'"),
    ({"name": "a", "taskReferenceName": "x", "startDelay": -1}, "'startDelay'"),
])
def test_language_errors_name_the_task_and_field(task, fragment):
    _, problems = validate_workflow_def(wf(task), DEFS, {})
    assert problems, "expected a validation error"
    assert any(fragment in p for p in problems), problems
