"""The worker SDK's @subscribe against one real node: at-least-once delivery to consumer groups,
redelivery of what a handler did not finish, dead-lettering, retention by age, and the CLI's
event commands."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest

from helpers import unique
from worker import ClientError, Event, Subscriber, subscribe


def wait_until(check: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_group_gets_every_event_once_and_members_of_a_group_share_them(node: Any) -> None:
    topic = unique("orders.created")
    seen: dict[str, Counter[str]] = {"billing": Counter(), "shipping": Counter()}
    lock = threading.Lock()

    def handler_for(group: str) -> Any:
        @subscribe(topic, group=group)
        def handle(event: Event) -> None:
            with lock:
                seen[group][event.payload["order"]] += 1
        return handle

    members = [Subscriber(endpoints=[node.endpoint], handlers=[handler_for("billing")], wait_s=0.5),
               Subscriber(endpoints=[node.endpoint], handlers=[handler_for("billing")], wait_s=0.5),
               Subscriber(endpoints=[node.endpoint], handlers=[handler_for("shipping")], wait_s=0.5)]
    for member in members:
        member.start()
    try:
        time.sleep(1.0)   # the groups exist once each member asked (they start at the topic's end)
        orders = [f"o{i}" for i in range(40)]
        for order in orders:
            node.client.publish_event(topic, {"order": order}, key=order)
        wait_until(lambda: sum(seen["billing"].values()) >= 40 and sum(seen["shipping"].values()) >= 40)
        time.sleep(0.5)
    finally:
        for member in members:
            member.stop()
    assert seen["billing"] == Counter(orders) and seen["shipping"] == Counter(orders)   # each once per group
    assert members[0].stats.handled > 0 and members[1].stats.handled > 0                 # the group shared them
    assert members[0].stats.handled + members[1].stats.handled == 40


def test_an_event_whose_handler_failed_is_delivered_again_and_dead_lettered_after_max_deliveries(node: Any) -> None:
    topic = unique("payments")
    attempts: Counter[str] = Counter()

    @subscribe(topic, group="flaky", redeliver_after_s=0.5, max_deliveries=3)
    def handle(event: Event) -> None:
        attempts[event.payload["id"]] += 1
        if event.payload["id"] == "poison" or event.deliveries == 1:
            raise RuntimeError(f"cannot handle {event.payload['id']} yet")

    subscriber = Subscriber(endpoints=[node.endpoint], handlers=[handle], wait_s=0.3)
    subscriber.start()
    try:
        time.sleep(0.8)
        node.client.publish_event(topic, {"id": "good"})
        poison_id = node.client.publish_event(topic, {"id": "poison"})
        wait_until(lambda: attempts["good"] >= 2 and attempts["poison"] >= 3)
        time.sleep(1.5)   # past another redelivery time: the poison event is not delivered a 4th time
        letters = [e for e in node.client.read_events("deadletter", limit=1000)
                   if e["payload"].get("eventId") == poison_id]
    finally:
        subscriber.stop()
    assert attempts == Counter({"good": 2, "poison": 3})
    assert subscriber.stats.redelivered >= 3
    assert len(letters) == 1 and letters[0]["payload"]["topic"] == topic
    assert letters[0]["payload"]["payload"] == {"id": "poison"}


def test_retention_by_age_drops_old_events_when_new_ones_arrive(node: Any) -> None:
    topic = unique("telemetry")
    info = node.client.configure_topic(topic, max_age_s=1)
    assert int(info["max_age_s"]) == 1
    for i in range(5):
        node.client.publish_event(topic, {"i": i})
    assert len(node.client.read_events(topic)) == 5
    time.sleep(1.2)
    node.client.publish_event(topic, {"i": "new"})
    assert [e["payload"]["i"] for e in node.client.read_events(topic)] == ["new"]
    assert int(node.client.get_topic(topic)["length"]) == 1


def test_subscription_requests_are_checked(node: Any) -> None:
    with pytest.raises(ClientError) as refused:
        node.client.receive_events("t", "bad group!", consumer="c")
    assert refused.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ClientError) as refused:
        node.client.receive_events("t", "g", consumer="c", wait_ms=60_000)
    assert refused.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ClientError) as refused:
        node.client.ack_events("t", "g", ["not-an-id"])
    assert refused.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ValueError):
        subscribe("bad topic!")(lambda event: None)
    with pytest.raises(TypeError):
        Subscriber(endpoints=[node.endpoint], handlers=[lambda event: None])


def test_the_cli_publishes_reads_and_sets_retention(node: Any) -> None:
    topic = unique("cli.events")

    def cli(*args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", node.endpoint, "--json",
                               "event", *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    published = cli("publish", topic, "--payload", '{"order": "o-1"}', "--key", "o-1")
    assert published["topic"] == topic and published["event_id"]
    events = cli("read", topic)
    assert [(e["key"], e["payload"]) for e in events] == [("o-1", {"order": "o-1"})]
    assert int(cli("topic", topic, "--max-len", "10", "--max-age", "3600")["max_age_s"]) == 3600
