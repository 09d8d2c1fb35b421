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
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from helpers import unique
from orchestrator.api.events import SUBSCRIPTION_PREFIX
from orchestrator.store.redis.keys import Keys, cluster_prefix
from worker import ClientError, Event, Subscriber, subscribe


def wait_until(check: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def raw(node: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(node.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


class Topic:
    """A topic's stream and its subscriptions' consumer groups, read from Redis."""

    def __init__(self, raw: redis.Redis, node: Any, topic: str) -> None:
        self.raw = raw
        self.stream = Keys(cluster_prefix(node.cluster)).events(topic)

    def group(self, name: str) -> dict[str, Any] | None:
        try:
            groups = self.raw.xinfo_groups(self.stream)
        except redis.ResponseError:   # no stream yet
            return None
        return next((g for g in groups if g["name"] == SUBSCRIPTION_PREFIX + name), None)

    def settled(self, name: str) -> bool:
        """Every event of the topic was delivered to the group and acknowledged (or dead-lettered):
        none can be delivered again."""
        group, last = self.group(name), self.raw.xrevrange(self.stream, count=1)
        return bool(group and last and group["pending"] == 0 and group["last-delivered-id"] == last[0][0])


def test_each_group_gets_every_event_once_and_members_of_a_group_share_them(node: Any, raw: redis.Redis) -> None:
    topic = unique("orders.created")
    stream = Topic(raw, node, topic)
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
        # the groups exist once a member asked (they start at the topic's end)
        wait_until(lambda: stream.group("billing") and stream.group("shipping"))
        orders = [f"o{i}" for i in range(40)]
        for order in orders:
            node.client.publish_event(topic, {"order": order}, key=order)
        wait_until(lambda: stream.settled("billing") and stream.settled("shipping"))   # nothing more comes
    finally:
        for member in members:
            member.stop()
    assert seen["billing"] == Counter(orders) and seen["shipping"] == Counter(orders)   # each once per group
    assert members[0].stats.handled > 0 and members[1].stats.handled > 0                 # the group shared them
    assert members[0].stats.handled + members[1].stats.handled == 40


def test_an_event_whose_handler_failed_is_delivered_again_and_dead_lettered_after_max_deliveries(
        node: Any, raw: redis.Redis) -> None:
    topic = unique("payments")
    stream = Topic(raw, node, topic)
    attempts: Counter[str] = Counter()

    @subscribe(topic, group="flaky", redeliver_after_s=0.5, max_deliveries=3)
    def handle(event: Event) -> None:
        attempts[event.payload["id"]] += 1
        if event.payload["id"] == "poison" or event.deliveries == 1:
            raise RuntimeError(f"cannot handle {event.payload['id']} yet")

    subscriber = Subscriber(endpoints=[node.endpoint], handlers=[handle], wait_s=0.3)
    subscriber.start()
    try:
        wait_until(lambda: stream.group("flaky"))   # it starts at the topic's end: publish after
        node.client.publish_event(topic, {"id": "good"})
        poison_id = node.client.publish_event(topic, {"id": "poison"})

        def dead_letters() -> list[dict[str, Any]]:
            return [e for e in node.client.read_events("deadletter", limit=1000)
                    if e["payload"].get("eventId") == poison_id]
        # the poison event dead-lettered and both acknowledged: neither can be delivered again
        wait_until(lambda: dead_letters() and stream.settled("flaky"))
        letters = dead_letters()
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
