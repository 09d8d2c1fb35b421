"""Checks that fail when what they look for is not there (imported as `assertions`).

A missing Prometheus series is not a zero: `series` fails for it, where reading it with a
default would let `== 0` pass for a metric that was renamed, relabelled or never written.

Something that must not happen is checked once a positive marker proves it had its chance:
`wait_until_topic_handled` returns once every event published to a topic so far was handled,
instead of a fixed sleep after which the event may simply not have been read yet.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str) -> Samples:
    """Every sample of `base_url`/metrics, by name and labels."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def labels_of(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of every series of `name` (empty when there is none)."""
    return [dict(labels) for (found, labels) in samples if found == name]


def series(samples: Samples, name: str, **labels: str) -> float:
    """The value of the series `name{labels}`; an AssertionError naming the series of `name`
    there are when it does not exist."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no series {name}{labels}; the series of {name}: {labels_of(samples, name)}"
    return samples[key]


def absent(samples: Samples, name: str, **labels: str) -> None:
    """The series `name{labels}` does not exist, while `name` has other series (so the name is right)."""
    assert labels_of(samples, name), f"no series of {name} at all"
    key = (name, frozenset(labels.items()))
    assert key not in samples, f"{name}{labels} = {samples[key]}"


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the series `name{labels}` grew from `before` to `after`. It must exist in `after`;
    in `before` it may be missing only for a labelled counter (`_total`) whose label value had not
    been counted yet (a counter's series appears with its first count)."""
    now = series(after, name, **labels)
    if labels and name.endswith("_total") and (name, frozenset(labels.items())) not in before:
        return now
    return now - series(before, name, **labels)


def wait_until_waiting(client: Any, workflow_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The workflow once one of its WAIT tasks is in progress: an event for it is no longer early."""
    deadline = time.monotonic() + timeout_s
    while True:
        workflow = client.get_workflow(workflow_id)
        if any(t["kind"] == "WAIT" and t["status"] == "IN_PROGRESS" for t in workflow["tasks"]):
            return dict(workflow)
        assert time.monotonic() < deadline, f"workflow {workflow_id} never waited: {workflow}"
        time.sleep(0.02)


def wait_until_topic_handled(client: Any, topic: str, waiting_flow: str, timeout_s: float = 20.0) -> None:
    """Return once the WAIT consumer of `topic` on a single node has handled every event published
    to it before the call. `waiting_flow` names a definition of `client`'s namespace whose WAIT on
    `topic` ends it once an event for it comes (other tasks after it are fine).

    Two of its workflows are markers, each completed by an event keyed by its id; the second event
    is published only once the first marker completed. A consumer handles one batch at a time,
    and a batch holds the earliest unread events in order: so the first marker's event was handled
    in a batch that also held or followed every earlier event, and the second marker's event,
    published after that batch was read, completes only once that batch is done."""
    markers = [client.start_workflow(waiting_flow, {}) for _ in range(2)]
    for marker in markers:
        wait_until_waiting(client, marker, timeout_s)
    for marker in markers:
        client.publish_event(topic, {"marker": True}, key=marker)
        deadline = time.monotonic() + timeout_s
        while (status := client.get_workflow(marker, include_tasks=False)["status"]) != "COMPLETED":
            assert status == "RUNNING" and time.monotonic() < deadline, f"marker {marker} of {topic} is {status}"
            time.sleep(0.02)
