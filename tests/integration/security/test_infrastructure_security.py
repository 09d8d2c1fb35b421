"""A node that reaches Redis as an ACL user over TLS and etcd over mutual TLS (real servers, a
throwaway CA), runs workflows, and what is refused to anyone without the credentials; etcd's
own users and roles (deploy/production/etcd-auth.sh) limit the nodes to their prefix and refuse
every other certificate."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import grpc
import pytest
import redis

from devtools.certs import DevCerts, issue_cert, make_dev_certs
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import ManagedProcess, free_port, wait_for_port
from helpers import BackgroundWorker, wait_for_status
from orchestrator.cluster.etcd import EtcdClient, EtcdUnavailable
from worker import Worker, WorkflowClient, task

PASSWORD = "acl-password-" + uuid.uuid4().hex
ETCD_AUTH_SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "production" / "etcd-auth.sh"


class RedisTls(TypedDict):
    """The TLS keywords of redis.Redis: typed, so spreading them is checked against its signature."""
    ssl: bool
    ssl_ca_certs: str
    ssl_certfile: str
    ssl_keyfile: str


class Infrastructure:
    def __init__(self, certs: DevCerts, redis_port: int, etcd_port: int, password_file: Path) -> None:
        self.certs = certs
        self.redis_port = redis_port
        self.etcd_port = etcd_port
        self.password_file = password_file


@pytest.fixture(scope="module")
def infrastructure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infrastructure]:
    folder = tmp_path_factory.mktemp("infra")
    certs = make_dev_certs(folder / "certs")
    redis_port, etcd_port, peer_port = free_port(), free_port(), free_port()
    (folder / "redis.conf").write_text(
        f"port 0\ntls-port {redis_port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {folder}\n"
        f"tls-cert-file {certs.node_cert}\ntls-key-file {certs.node_key}\ntls-ca-cert-file {certs.ca}\n"
        "tls-auth-clients yes\nuser default off\n"
        f"user orchestrator on >{PASSWORD} ~wfo:* &wfo:* +@all -@admin -flushall -flushdb\n")
    password_file = folder / "redis.password"
    password_file.write_text(PASSWORD + "\n")
    servers = [
        ManagedProcess("redis-tls", ["redis-server", str(folder / "redis.conf")], folder),
        ManagedProcess("etcd-tls", [
            "etcd", "--name", "m0", "--data-dir", str(folder / "etcd"),
            "--listen-client-urls", f"https://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"https://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"m0=http://127.0.0.1:{peer_port}",
            "--cert-file", str(certs.node_cert), "--key-file", str(certs.node_key),
            "--trusted-ca-file", str(certs.ca), "--client-cert-auth", "--log-level", "warn"], folder)]
    try:
        wait_for_port("127.0.0.1", redis_port, 20.0, servers[0])
        wait_for_port("127.0.0.1", etcd_port, 20.0, servers[1])
        yield Infrastructure(certs, redis_port, etcd_port, password_file)
    finally:
        for server in servers:
            server.stop()


def test_a_node_runs_on_redis_acl_and_tls_and_etcd_mutual_tls(infrastructure: Infrastructure,
                                                              tmp_path: Path) -> None:
    certs = infrastructure.certs
    port = free_port()
    node = start_node(tmp_path, node_id="guarded-infra", port=port,
                      redis_url=f"rediss://127.0.0.1:{infrastructure.redis_port}/0",
                      etcd_endpoints=[f"127.0.0.1:{infrastructure.etcd_port}"], cluster=f"i{uuid.uuid4().hex[:8]}",
                      lease_ttl_s=2.0, extra=[
                          "--redis-username", "orchestrator",
                          "--redis-password-file", str(infrastructure.password_file),
                          "--redis-tls-ca", str(certs.ca), "--redis-tls-cert", str(certs.client_cert),
                          "--redis-tls-key", str(certs.client_key),
                          "--etcd-tls-ca", str(certs.ca), "--etcd-tls-cert", str(certs.client_cert),
                          "--etcd-tls-key", str(certs.client_key)])
    client = WorkflowClient([f"127.0.0.1:{port}"])
    try:
        assert wait_for_leader(client, 30.0)["leader_id"] == "guarded-infra"   # elected through etcd over mTLS
        client.register_task_def({"name": "infra_step"})
        client.register_workflow_def({"name": "infra_flow",
                                      "tasks": [{"name": "infra_step", "taskReferenceName": "s"}]})

        @task("infra_step")
        def step(data: dict[str, Any]) -> dict[str, Any]:
            return {"stored": "through TLS"}

        background = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"], handlers=[step]))
        try:
            workflow_id = client.start_workflow("infra_flow", {})
            assert wait_for_status(client, workflow_id, "COMPLETED")["output"] == {"stored": "through TLS"}
        finally:
            background.stop()
    finally:
        client.close()
        node.stop()


def test_without_the_credentials_redis_and_etcd_refuse(infrastructure: Infrastructure) -> None:
    certs = infrastructure.certs
    tls: RedisTls = {"ssl": True, "ssl_ca_certs": str(certs.ca), "ssl_certfile": str(certs.client_cert),
           "ssl_keyfile": str(certs.client_key)}
    # no password: TLS is fine and Redis answers, refusing the default user (it is off)
    with pytest.raises(redis.exceptions.AuthenticationError, match=r"(?i)authenticated|authentication required"):
        redis.Redis(host="127.0.0.1", port=infrastructure.redis_port, **tls).ping()
    # no TLS at all: connected, then dropped at the handshake (not refused, not an answer of Redis)
    with pytest.raises(redis.exceptions.ConnectionError) as plaintext:
        redis.Redis(host="127.0.0.1", port=infrastructure.redis_port, username="orchestrator",
                    password=PASSWORD, socket_timeout=3).ping()
    assert type(plaintext.value) is redis.exceptions.ConnectionError, repr(plaintext.value)
    assert re.search(r"Error while reading from|Connection closed by server", str(plaintext.value)), plaintext.value
    acl_user = redis.Redis(host="127.0.0.1", port=infrastructure.redis_port, username="orchestrator",
                           password=PASSWORD, **tls)
    assert acl_user.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):   # least privilege: not every command
        acl_user.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError):   # nor keys outside the cluster's prefix
        acl_user.set("elsewhere", "1")
    acl_user.close()

    async def probe(credentials: grpc.ChannelCredentials) -> int:
        etcd = EtcdClient([f"127.0.0.1:{infrastructure.etcd_port}"], timeout=2.0, credentials=credentials)
        try:
            return await etcd.put("/probe", b"x")
        finally:
            await etcd.close()
    ca = certs.ca.read_bytes()
    with pytest.raises(EtcdUnavailable) as no_certificate:   # etcd asks for a client certificate: none, no answer
        asyncio.run(probe(grpc.ssl_channel_credentials(root_certificates=ca)))
    # refused in the TLS handshake (its message varies), not a connection refused: etcd is there
    assert "Connection refused" not in str(no_certificate.value), no_certificate.value
    assert asyncio.run(probe(grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=certs.client_key.read_bytes(),
        certificate_chain=certs.client_cert.read_bytes()))) > 0


def _etcd_with_client_certs(folder: Path, certs: DevCerts) -> tuple[ManagedProcess, str]:
    port, peer_port = free_port(), free_port()
    server = ManagedProcess("etcd-rbac", [
        "etcd", "--name", "r0", "--data-dir", str(folder / "etcd-rbac"),
        "--listen-client-urls", f"https://127.0.0.1:{port}", "--advertise-client-urls", f"https://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"r0=http://127.0.0.1:{peer_port}",
        "--cert-file", str(certs.node_cert), "--key-file", str(certs.node_key),
        "--trusted-ca-file", str(certs.ca), "--client-cert-auth", "--log-level", "warn"], folder)
    wait_for_port("127.0.0.1", port, 20.0, server)
    return server, f"https://127.0.0.1:{port}"


def _etcdctl(endpoint: str, ca: Path, cert: Path, key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": endpoint, "ETCDCTL_CACERT": str(ca),
           "ETCDCTL_CERT": str(cert), "ETCDCTL_KEY": str(key), "ETCDCTL_DIAL_TIMEOUT": "5s"}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)


def test_etcd_users_and_roles_limit_the_nodes_to_their_prefix(tmp_path: Path, redis_server: Any) -> None:
    """After deploy/production/etcd-auth.sh, etcd takes a certificate's CN as its user: the nodes'
    user elects a leader under `/orchestrator/<cluster>/` and can write nothing else; a certificate
    the same CA signed for anyone else (who could plant election keys before) is refused."""
    certs = make_dev_certs(tmp_path / "certs")
    root_cert, root_key = issue_cert(tmp_path / "certs", "root", "root")
    intruder_cert, intruder_key = issue_cert(tmp_path / "certs", "intruder", "someone else")
    server, endpoint = _etcd_with_client_certs(tmp_path, certs)
    cluster = f"r{uuid.uuid4().hex[:8]}"
    node: ManagedProcess | None = None
    try:
        as_root = _etcdctl(endpoint, certs.ca, root_cert, root_key, "bash", str(ETCD_AUTH_SCRIPT), cluster,
                           "orchestrator client")
        assert as_root.returncode == 0, as_root.stderr
        assert "etcd auth is on" in as_root.stdout
        again = _etcdctl(endpoint, certs.ca, root_cert, root_key, "bash", str(ETCD_AUTH_SCRIPT), cluster,
                         "orchestrator client")
        assert again.returncode == 0, again.stderr   # running it twice is harmless
        port = free_port()
        node = start_node(tmp_path, node_id="rbac-node", port=port, redis_url=redis_server.url,
                          etcd_endpoints=[endpoint.removeprefix("https://")], cluster=cluster, lease_ttl_s=2.0,
                          extra=["--etcd-tls-ca", str(certs.ca), "--etcd-tls-cert", str(certs.client_cert),
                                 "--etcd-tls-key", str(certs.client_key)])
        with WorkflowClient([f"127.0.0.1:{port}"]) as client:
            assert wait_for_leader(client, 30.0)["leader_id"] == "rbac-node"   # every RPC it needs is allowed
        planted = f"/orchestrator/{cluster}/election/planted"
        intruder = _etcdctl(endpoint, certs.ca, intruder_cert, intruder_key, "etcdctl", "put", planted, "x")
        assert intruder.returncode != 0 and "permission denied" in intruder.stderr
        outside = _etcdctl(endpoint, certs.ca, certs.client_cert, certs.client_key, "etcdctl", "put", "/other", "x")
        assert outside.returncode != 0 and "permission denied" in outside.stderr
        listed = _etcdctl(endpoint, certs.ca, root_cert, root_key, "etcdctl", "get", "--prefix", "--keys-only",
                          f"/orchestrator/{cluster}/")
        assert planted not in listed.stdout and "/other" not in listed.stdout
        assert f"/orchestrator/{cluster}/" in listed.stdout   # the node's own keys are there
    finally:
        if node is not None:
            node.stop()
        server.stop()
