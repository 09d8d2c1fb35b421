"""A node started on ports picked free moves to new ones when another process takes one first."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devtools.local_cluster import start_node_on_free_ports, wait_for_leader
from devtools.procs import free_port
from worker import WorkflowClient


def test_a_node_whose_console_port_was_taken_starts_on_new_ports(tmp_path: Path, etcd: Any,
                                                                 redis_server: Any) -> None:
    """Nothing holds a port between `free_port` and the node's bind; another process that takes it
    meanwhile (a test beside it, an outgoing connection given that ephemeral port) failed the
    fixture before ("cannot serve the console on ...: Address already in use")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks: Iterator[int] = iter([free_port(), taken])   # the first try's console port is taken

        def pick() -> int:
            return next(picks, 0) or free_port()
        process, port, http_port = start_node_on_free_ports(
            tmp_path, pick_port=pick, node_id="moved", redis_url=redis_server.url, etcd_endpoints=etcd.endpoints,
            cluster=f"t{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0)
        try:
            assert http_port != taken
            with WorkflowClient([f"127.0.0.1:{port}"]) as client:
                wait_for_leader(client, 20.0)
            with socket.create_connection(("127.0.0.1", http_port), timeout=2):
                pass   # its console listens on the new port
        finally:
            process.stop()
