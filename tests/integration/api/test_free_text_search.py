"""Free-text search: words found in a workflow's id, correlation id, input, output, variables
or reason, through the gRPC API and the CLI (one real node; the Conductor API's freeText in
tests/integration/conductor/test_conductor_sdk.py, the archive's in tests/integration/store/test_retention.py)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from helpers import register_sequence, unique, wait_for_status
from worker import ClientError, task


def test_every_word_must_appear_ignoring_case_in_input_output_or_reason(node: Any, run_worker: Any) -> None:
    name = unique("texts")
    task_name = f"{name}_t"
    register_sequence(node.client, name, [task_name])

    @task(task_name)
    def answer(data: dict[str, Any]) -> dict[str, Any]:
        if data["n"] == "Zürich third":
            raise RuntimeError("card declined by issuer")
        return {"shipped_to": f"warehouse {data['n']}"}

    run_worker([node.endpoint], [answer])
    ids = {n: node.client.start_workflow(name, {"n": n}, correlation_id=f"corr-{i}")
           for i, n in enumerate(["Zürich first", "Basel second", "Zürich third"])}
    for workflow_id in ids.values():
        wait_for_status(node.client, workflow_id, {"COMPLETED", "FAILED"})

    def found(text: str) -> set[str]:
        page, _ = node.client.search_workflows(name=name, text=text, limit=50)
        return {w["workflow_id"] for w in page}

    assert found("zürich") == {ids["Zürich first"], ids["Zürich third"]}     # input, any case
    assert found("ZÜRICH third") == {ids["Zürich third"]}                          # every word
    assert found("warehouse basel") == {ids["Basel second"]}                    # output
    assert found("DECLINED") == {ids["Zürich third"]}                          # reason
    assert found("corr-1") == {ids["Basel second"]}                             # correlation id
    assert found(ids["Basel second"][:12]) == {ids["Basel second"]}            # id
    assert found("nowhere-to-be-seen") == set()
    assert found("") == set(ids.values())

    cli = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", node.endpoint, "--json",
                          "workflow", "search", "--name", name, "--text", "basel"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert ids["Basel second"] in cli.stdout and ids["Zürich first"] not in cli.stdout


def test_too_many_or_too_long_words_are_refused(node: Any) -> None:
    with pytest.raises(ClientError) as refused:
        node.client.search_workflows(text=" ".join(["w"] * 11))
    assert refused.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ClientError) as refused:
        node.client.search_workflows(text="x" * 101)
    assert refused.value.code == "INVALID_ARGUMENT"
