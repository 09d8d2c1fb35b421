"""Conductor's JSONPath in `${...}` on a real node: one workflow reads deep scans, filters and
`length()` of a task's output, and a definition using what is refused is not registered (the
syntax itself: tests/unit/core/test_jsonpath.py)."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import unique, wait_for_status
from worker import ClientError, task


def test_a_workflow_reads_deep_scans_filters_and_length_on_a_real_node(node: Any, run_worker: Any) -> None:
    client = node.client
    search, report, name = unique("es_search"), unique("report"), unique("jsonpath_wf")
    for task_name in (search, report):
        client.register_task_def({"name": task_name})
    client.register_workflow_def({"name": name, "schemaVersion": 2, "tasks": [
        {"name": search, "taskReferenceName": "get_es_1", "inputParameters": {"q": "${workflow.input.q}"}},
        {"name": report, "taskReferenceName": "report", "inputParameters": {
            "statuses": "${get_es_1.output..status}",
            "books": "${get_es_1.output.hits[?(@.kind == 'book')].id}",
            "cheap": "${get_es_1.output.hits[?(@.kind == 'book' && @.price < $.workflow.input.max)].id}",
            "count": "${get_es_1.output.hits.length()}",
            "last": "${get_es_1.output.hits[-1:].id}",
            "line": "first ${get_es_1.output.hits[0].id} of ${get_es_1.output.hits.length()}"}}],
        "outputParameters": {"report": "${report.output}", "statuses": "${get_es_1.output..status}",
                             "books": "${get_es_1.output.hits[?(@.kind == 'book')].id}",
                             "count": "${get_es_1.output.hits.length()}", "none": "${get_es_1.output..nothing}"}})

    @task(search)
    def search_handler(data: dict[str, Any]) -> dict[str, Any]:
        return {"status": "done", "hits": [
            {"id": "b1", "kind": "book", "price": 5, "shard": {"status": "green"}},
            {"id": "m1", "kind": "movie", "price": 3, "shard": {"status": "yellow"}},
            {"id": "b2", "kind": "book", "price": 50, "shard": {"status": "red"}}]}

    @task(report)
    def report_handler(data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)

    run_worker([node.endpoint], [search_handler, report_handler])
    workflow_id = client.start_workflow(name, {"q": "x", "max": 10})
    done = wait_for_status(client, workflow_id, "COMPLETED")
    assert done["output"]["report"] == {
        "statuses": ["done", "green", "yellow", "red"], "books": ["b1", "b2"], "cheap": ["b1"], "count": 3,
        "last": ["b2"], "line": "first b1 of 3"}
    assert done["output"]["statuses"] == ["done", "green", "yellow", "red"]
    assert done["output"]["books"] == ["b1", "b2"] and done["output"]["count"] == 3 and done["output"]["none"] == []

    refused_name = unique("regex_wf")
    with pytest.raises(ClientError) as refused:
        client.register_workflow_def({"name": refused_name, "tasks": [
            {"name": search, "taskReferenceName": "s"},
            {"name": report, "taskReferenceName": "r",
             "inputParameters": {"x": "${s.output.hits[?(@.kind =~ /bo.*/)].id}"}}]})
    assert refused.value.code == "INVALID_ARGUMENT" and "=~" in str(refused.value), refused.value
    with pytest.raises(ClientError) as missing:
        client.get_workflow_def(refused_name)
    assert missing.value.code == "NOT_FOUND"
