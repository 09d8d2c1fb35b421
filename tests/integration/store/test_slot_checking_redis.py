"""A slot-checked Redis (devtools.procs, `slot_checked=True`): a one-server Redis Cluster owning every
slot, which a plain client uses as any Redis but which refuses what Redis Cluster would refuse. The
store's scripts are held to one hash slot each against it (ORCHESTRATOR_TEST_REDIS=slots, `make
test-slots`), so what these tests show is what that run relies on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devtools.procs import ProcessError, RedisServer, free_port, lost_its_port, start_redis
from devtools.redis_cluster import SLOTS, key_slot
from redis_mode import slot_checked_redis

# The shebang turns on Redis 7's checks of the keys a script touches; without it only the keys it
# declares (KEYS) are checked, and only by the command's routing.
TWO_KEYS_SCRIPT = "#!lua\nredis.call('SET', KEYS[1], ARGV[1])\nreturn redis.call('SET', ARGV[2], ARGV[1])"
SAME_TAG = ("{wf-1}:status", "{wf-1}:tasks")
TWO_SLOTS = ("{wf-1}:status", "{wf-2}:status")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    started = start_redis(tmp_path_factory.mktemp("slot-checked"), slot_checked=True)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    plain = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield plain
    finally:
        plain.close()


def cluster_info(client: redis.Redis) -> dict[str, str]:
    text = str(client.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def test_the_keys_chosen_are_in_one_slot_and_in_two():
    assert key_slot(SAME_TAG[0]) == key_slot(SAME_TAG[1])
    assert key_slot(TWO_SLOTS[0]) != key_slot(TWO_SLOTS[1])


def test_it_owns_every_slot_and_serves_a_plain_client_at_once(server: RedisServer, client: redis.Redis):
    info = cluster_info(client)
    assert (info["cluster_state"], info["cluster_slots_assigned"], info["cluster_known_nodes"]) == \
        ("ok", str(SLOTS), "1")
    assert server.cluster_config_file.exists()
    assert client.set("plain", "1") and client.get("plain") == "1"


def test_a_script_on_keys_of_one_hash_tag_runs(client: redis.Redis):
    assert client.eval(TWO_KEYS_SCRIPT, 1, SAME_TAG[0], "RUNNING", SAME_TAG[1]) == "OK"
    assert client.mget(*SAME_TAG) == ["RUNNING", "RUNNING"]


def test_a_script_touching_a_second_slot_is_refused_before_it_writes_there(client: redis.Redis):
    with pytest.raises(redis.ResponseError, match="Script attempted to access keys that do not hash to the same slot"):
        client.eval(TWO_KEYS_SCRIPT, 1, TWO_SLOTS[0], "FAILED", TWO_SLOTS[1])
    assert client.get(TWO_SLOTS[1]) is None


def test_declared_keys_of_two_slots_are_refused_even_without_the_shebang(client: redis.Redis):
    unchecked = "return redis.call('SET', KEYS[1], ARGV[1])"
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        client.eval(unchecked, 2, *TWO_SLOTS, "x")


def test_without_the_shebang_a_key_it_does_not_declare_is_not_checked(client: redis.Redis):
    """Why the store's scripts carry `#!lua`: this is what the check misses without it."""
    unchecked = TWO_KEYS_SCRIPT.removeprefix("#!lua\n")
    assert client.eval(unchecked, 1, TWO_SLOTS[0], "unchecked", TWO_SLOTS[1]) == "OK"


def test_restart_keeps_the_data_and_every_slot(tmp_path: Path):
    server = start_redis(tmp_path / "redis", slot_checked=True)
    try:
        before = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            before.eval(TWO_KEYS_SCRIPT, 1, SAME_TAG[0], "kept", SAME_TAG[1])
            node_id, first_pid = before.execute_command("CLUSTER", "MYID"), server.process.pid
        finally:
            before.close()
        server.restart()
        after = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert server.process.pid != first_pid
            assert after.mget(*SAME_TAG) == ["kept", "kept"]   # from the AOF
            info = cluster_info(after)
            assert (info["cluster_state"], info["cluster_slots_assigned"]) == ("ok", str(SLOTS))
            assert after.execute_command("CLUSTER", "MYID") == node_id   # the same node, from its node file
            with pytest.raises(redis.ResponseError, match="do not hash to the same slot"):
                after.eval(TWO_KEYS_SCRIPT, 1, TWO_SLOTS[0], "x", TWO_SLOTS[1])
        finally:
            after.close()
    finally:
        server.stop()
    assert not server.process.alive()


def test_a_taken_cluster_bus_port_fails_the_start_as_a_lost_port(tmp_path: Path):
    """start_redis tries other ports after such a failure, the bus port chosen afresh with them."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = RedisServer(tmp_path / "redis", free_port(), slot_checked=True,
                             cluster_bus_port=holder.getsockname()[1])
        with pytest.raises(ProcessError, match=r"(?s)Address already in use.*cluster") as refused:
            server.start()
    assert lost_its_port(str(refused.value)) and not server.process.alive()


def test_it_cannot_be_a_replica(tmp_path: Path):
    with pytest.raises(ValueError, match=r"slot_checked.*replica_of"):
        RedisServer(tmp_path / "replica", 6399, replica_of=6398, slot_checked=True)
    with pytest.raises(ValueError, match=r"slot_checked.*replica_of"):
        start_redis(tmp_path / "replica", replica_of=6398, slot_checked=True)
    assert not (tmp_path / "replica").exists()   # refused before anything started


def test_the_sessions_redis_checks_slots_exactly_when_the_environment_asks(redis_server: RedisServer):
    """ORCHESTRATOR_TEST_REDIS=slots reaches the `redis_server` fixture (tests/conftest.py)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        cluster_enabled = client.info("cluster")["cluster_enabled"]
    finally:
        client.close()
    assert redis_server.slot_checked is slot_checked_redis() is bool(cluster_enabled)
