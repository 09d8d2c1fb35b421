"""The `orchestrator` CLI, run as a user runs it (a subprocess), against a real node and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import EXAMPLES, BackgroundWorker, load_example_handlers, wait_for_status
from worker import Worker


def cli(node, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", node.endpoint, *args],
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def cli_json(node, *args: str):
    return json.loads(cli(node, *args).stdout)


def bare_cli(*args: str, endpoints_env: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with no --endpoints before the command; ORCHESTRATOR_ENDPOINTS as given (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_ENDPOINTS"}
    if endpoints_env is not None:
        env["ORCHESTRATOR_ENDPOINTS"] = endpoints_env
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Assert `done` failed with `code` and exactly one stderr line (no traceback) holding `fragments`."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def started_waiting(node) -> str:
    """An `approval` workflow that waits on its HUMAN task `approve`."""
    started = cli_json(node, "workflow", "start", "approval", "--input", '{"traveller": "k", "to": "Graz"}')
    workflow_id = started["workflow_id"]
    deadline = time.monotonic() + 10
    while not any(t["key"] == "approve" and t["status"] == "IN_PROGRESS"
                  for t in node.client.get_workflow(workflow_id)["tasks"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return workflow_id


@pytest.fixture(scope="module")
def registered(node):
    cli(node, "taskdef", "register", str(EXAMPLES / "task_defs.json"))
    for name in ("trip_saga", "order_routing", "parallel_quotes", "ship_each", "retry_until", "approval"):
        cli(node, "workflowdef", "register", str(EXAMPLES / f"{name}.yaml"))
    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=load_example_handlers()))
    yield node
    background.stop()


def test_definitions_from_files(registered, tmp_path: Path):
    listed = cli_json(registered, "taskdef", "list")
    assert {"book_flight", "cancel_hotel", "ship"} <= {d["name"] for d in listed}
    assert cli_json(registered, "workflowdef", "get", "trip_saga")["version"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks:\n  - {name: ghost, taskReferenceName: g}\n")
    checked = cli(registered, "workflowdef", "validate", str(bad), ok=False)
    assert checked.returncode == 1
    assert any("no task definition named 'ghost'" in e for e in json.loads(checked.stdout)[f"{bad}:bad"])
    refused = cli(registered, "workflowdef", "register", str(bad), ok=False)
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr


def test_start_and_wait_get_search(registered):
    before = int(time.time() * 1000)
    done = cli_json(registered, "workflow", "start", "order_routing", "--input", '{"price": 2, "qty": 3}',
                    "--wait", "20")
    assert done["status"] == "COMPLETED" and done["output"]["total"] == 6
    shown = cli_json(registered, "workflow", "get", done["workflow_id"])
    assert [t["key"] for t in shown["tasks"]][:2] == ["currency", "total"]
    found = cli_json(registered, "workflow", "search", "--name", "order_routing", "--status", "COMPLETED",
                     "--from-ms", str(before))
    assert done["workflow_id"] in [w["workflow_id"] for w in found["workflows"]]
    missing = cli(registered, "workflow", "get", "nope", ok=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_signal_pause_resume_skip_and_watch(registered):
    started = cli_json(registered, "workflow", "start", "approval", "--input", '{"traveller": "gus", "to": "Oslo"}')
    workflow_id = started["workflow_id"]
    assert cli_json(registered, "workflow", "pause", workflow_id)["status"] == "PAUSED"
    assert cli_json(registered, "workflow", "resume", workflow_id)["status"] == "RUNNING"
    deadline = time.monotonic() + 10
    while not any(t["key"] == "approve" for t in registered.client.get_workflow(workflow_id)["tasks"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cli(registered, "workflow", "signal", workflow_id, "approve", "--output", '{"by": "cli", "approved_amount": 5}')
    watched = cli(registered, "workflow", "watch", workflow_id).stdout.strip().splitlines()
    assert watched[-1].split()[1] == "COMPLETED:"
    assert registered.client.get_workflow(workflow_id)["output"]["approved_by"] == "cli"

    other = cli_json(registered, "workflow", "start", "approval", "--input", '{"traveller": "h", "to": "Rome"}')
    cli(registered, "workflow", "skip", other["workflow_id"], "approve")
    assert wait_for_status(registered.client, other["workflow_id"], "COMPLETED")


def test_terminate_compensate_retry_restart_rerun(registered):
    saga = cli_json(registered, "workflow", "start", "trip_saga", "--input",
                    '{"traveller": "ida", "to": "Nice", "amount": 99999}', "--wait", "20")
    assert saga["status"] == "COMPENSATED"
    restarted = cli_json(registered, "workflow", "restart", saga["workflow_id"])
    assert restarted["status"] == "RUNNING"
    assert wait_for_status(registered.client, saga["workflow_id"], "COMPENSATED")

    routed = cli_json(registered, "workflow", "start", "order_routing", "--input", '{"price": 1, "qty": 1}',
                      "--wait", "20")
    cli(registered, "workflow", "rerun", routed["workflow_id"], "total", "--input", '{"price": 5, "qty": 5}')
    assert wait_for_status(registered.client, routed["workflow_id"], "COMPLETED")["output"]["total"] == 25
    refused = cli(registered, "workflow", "retry", routed["workflow_id"], ok=False)
    assert "FAILED_PRECONDITION" in refused.stderr

    waiting = cli_json(registered, "workflow", "start", "approval", "--input", '{"traveller": "j", "to": "Bonn"}')
    stopped = cli_json(registered, "workflow", "terminate", waiting["workflow_id"], "--reason", "no longer needed",
                       "--compensate")
    assert stopped["status"] in ("COMPENSATING", "COMPENSATED")


def test_cluster_status(registered):
    status = cli_json(registered, "cluster", "status")
    assert status["role"] == "LEADER" and status["leading_for_s"] >= 0


def test_validate_exits_1_when_a_definition_is_invalid(registered, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks:\n  - {name: ghost, taskReferenceName: g}\n")
    good = EXAMPLES / "approval.yaml"
    checked = cli(registered, "workflowdef", "validate", str(good), str(bad), ok=False)
    assert checked.returncode == 1, checked
    report = json.loads(checked.stdout)
    assert report[f"{good}:approval"] == "valid"
    assert any("no task definition named 'ghost'" in e for e in report[f"{bad}:bad"])
    assert "1 of 2" in checked.stderr and "invalid" in checked.stderr
    assert cli_json(registered, "workflowdef", "validate", str(good)) == {f"{good}:approval": "valid"}


def test_start_whose_wait_runs_out_says_so_and_exits_3(registered):
    done = cli(registered, "workflow", "start", "approval", "--input", '{"traveller": "l", "to": "Linz"}',
               "--wait", "1", ok=False)
    workflow = json.loads(done.stdout)
    assert workflow["status"] == "RUNNING"
    line = one_line_error(done, 3, f"workflow {workflow['workflow_id']} is still RUNNING after 1 s",
                          f"orchestrator workflow watch {workflow['workflow_id']}")
    assert not line.startswith("error"), line
    assert "exit code 3" in " ".join(cli(registered, "workflow", "start", "--help").stdout.split())


@pytest.mark.parametrize("case", ["inline", "file", "missing", "not-object", "signal"])
def test_bad_json_flags_are_one_line_errors(registered, tmp_path: Path, case: str):
    broken = tmp_path / "input.json"
    broken.write_text('{\n  "price": 2,\n  "qty": ,\n}\n')
    start = ("workflow", "start", "order_routing", "--input")
    args, fragments = {
        "inline": ((*start, '{"price": 2,'), ("--input", "line 1, column 13")),
        "file": ((*start, f"@{broken}"), ("--input", str(broken), "line 3, column 10")),
        "missing": ((*start, f"@{tmp_path / 'nope.json'}"), ("--input", str(tmp_path / "nope.json"), "No such file")),
        "not-object": ((*start, "[1, 2]"), ("--input", "object")),
        "signal": (("workflow", "signal", "some-id", "approve", "--output", "{by: ann}"),
                   ("--output", "line 1, column 2")),
    }[case]
    one_line_error(cli(registered, *args, ok=False), 2, *fragments)


@pytest.mark.parametrize("case", ["yaml", "json", "missing", "not-object"])
def test_bad_definition_files_are_one_line_errors(registered, tmp_path: Path, case: str):
    files = {"yaml": ("broken.yaml", "name: broken\ntasks:\n  - name: a\n   taskReferenceName: [a\n"),
             "json": ("broken.json", '[\n  {"name": "a"},\n  {"name": "b",}\n]\n'),
             "not-object": ("list.yaml", "- just\n- strings\n")}
    path = tmp_path / "absent.yaml"
    if case in files:
        path = tmp_path / files[case][0]
        path.write_text(files[case][1])
    fragments = {"yaml": ("line 4, column",), "json": ("line 3, column 16",), "missing": ("No such file",),
                 "not-object": ("object",)}[case]
    for command in (("workflowdef", "validate"), ("workflowdef", "register"), ("taskdef", "register")):
        one_line_error(cli(registered, *command, str(path), ok=False), 2, str(path), *fragments)


def test_endpoints_are_accepted_after_the_subcommand(registered):
    workflow_id = started_waiting(registered)
    nowhere = "127.0.0.1:1"
    after = bare_cli("workflow", "get", workflow_id, "--endpoints", registered.endpoint, endpoints_env=nowhere)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["workflow_id"] == workflow_id
    overridden = bare_cli("--endpoints", nowhere, "cluster", "status", "--endpoints", registered.endpoint)
    assert overridden.returncode == 0 and json.loads(overridden.stdout)["role"] == "LEADER", overridden.stderr
    from_env = bare_cli("workflow", "get", workflow_id, endpoints_env=registered.endpoint)
    assert from_env.returncode == 0, from_env.stderr
    assert "ORCHESTRATOR_ENDPOINTS" in bare_cli("workflow", "get", "--help").stdout


def test_operations_print_no_empty_task_list(registered):
    workflow_id = started_waiting(registered)
    for action in ("pause", "resume"):
        shown = cli_json(registered, "workflow", action, workflow_id)
        assert shown["workflow_id"] == workflow_id and "tasks" not in shown, shown
    skipped = cli_json(registered, "workflow", "skip", workflow_id, "book")
    assert "tasks" not in skipped, skipped
    signalled = cli_json(registered, "workflow", "signal", workflow_id, "approve", "--output", '{"by": "m"}')
    assert [t["key"] for t in signalled["tasks"]][:2] == ["cool_off", "approve"]
    wait_for_status(registered.client, workflow_id, "COMPLETED")
    for args in (("restart", workflow_id), ("rerun", workflow_id, "cool_off")):
        assert "tasks" not in cli_json(registered, "workflow", *args)
    assert "without its tasks" in cli(registered, "workflow", "pause", "--help").stdout


def test_register_takes_definitions_in_any_file_order(registered, tmp_path: Path):
    """`workflowdef register examples/*.yaml` globs alphabetically: a parent comes before
    the sub-workflow it names; the CLI registers what a definition names first."""
    suffix = str(time.time_ns())
    parent, child = f"a_parent_{suffix}", f"z_child_{suffix}"
    (tmp_path / "a_parent.yaml").write_text(
        f"name: {parent}\ntasks:\n  - {{name: sub, taskReferenceName: sub, type: SUB_WORKFLOW, "
        f"subWorkflowParam: {{name: {child}}}}}\nfailureWorkflow: {child}\n")
    (tmp_path / "z_child.yaml").write_text(
        f"name: {child}\ntasks:\n  - {{name: notify, taskReferenceName: tell}}\n")
    files = sorted(str(p) for p in tmp_path.glob("*.yaml"))
    assert files[0].endswith("a_parent.yaml")
    cli(registered, "workflowdef", "register", *files)
    assert cli_json(registered, "workflowdef", "get", parent)["name"] == parent
    # and every example file at once, in glob order, as the README shows
    cli(registered, "workflowdef", "register", *sorted(str(p) for p in EXAMPLES.glob("*.yaml")))
