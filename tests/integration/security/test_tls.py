"""TLS and mutual TLS on a real node with a throwaway CA (devtools/certs.py, what
`make cluster SECURE=1` uses): clients with the client certificate get in over gRPC, HTTPS,
grpcurl and the CLI; plaintext and certificate-less clients do not; plaintext beyond loopback
is refused unless allowed in so many words."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.certs import DevCerts, make_dev_certs
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port
from helpers import BackgroundWorker, wait_for_status
from worker import ClientError, Worker, WorkflowClient, task


class Secure:
    def __init__(self, certs: DevCerts, endpoint: str, http: str) -> None:
        self.certs = certs
        self.endpoint = endpoint
        self.http = http

    def client(self, **overrides: Any) -> WorkflowClient:
        files = {"tls_ca": str(self.certs.ca), "tls_cert": str(self.certs.client_cert),
                 "tls_key": str(self.certs.client_key), **overrides}
        return WorkflowClient([self.endpoint], timeout_s=5.0, **files)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[Secure]:
    folder = tmp_path_factory.mktemp("tls")
    certs = make_dev_certs(folder / "certs")
    port, http_port = free_port(), free_port()
    process = start_node(folder, node_id="sealed", port=port, redis_url=redis_server.url,
                         etcd_endpoints=etcd.endpoints, cluster=f"s{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                         http_port=http_port, extra=certs.node_flags())
    running = Secure(certs, f"127.0.0.1:{port}", f"https://127.0.0.1:{http_port}")
    try:
        with running.client() as client:
            wait_for_leader(client, 20.0)
        yield running
    finally:
        process.stop()


def test_clients_with_the_client_certificate_get_in_and_others_do_not(secure: Secure) -> None:
    with secure.client() as client:
        client.register_task_def({"name": "sealed_step"})
        client.register_workflow_def({"name": "sealed", "tasks": [{"name": "sealed_step", "taskReferenceName": "s"}]})

        @task("sealed_step")
        def step(data: dict[str, Any]) -> dict[str, Any]:
            return {"sealed": True}

        background = BackgroundWorker(Worker(endpoints=[secure.endpoint], handlers=[step],
                                             tls_ca=str(secure.certs.ca), tls_cert=str(secure.certs.client_cert),
                                             tls_key=str(secure.certs.client_key)))
        try:
            workflow_id = client.start_workflow("sealed", {})
            assert wait_for_status(client, workflow_id, "COMPLETED")["output"] == {"sealed": True}
        finally:
            background.stop()
    # the same call without the client certificate: the connection is made and dropped in the
    # handshake, so no channel ever gets ready (not a refused connection, not an error of the call)
    with secure.client(tls_cert=None, tls_key=None) as no_certificate, pytest.raises(ClientError) as refused:
        no_certificate.list_task_defs()
    assert refused.value.code == "UNAVAILABLE", refused.value
    assert "failed to connect to all addresses" in str(refused.value), refused.value
    assert "Connection refused" not in str(refused.value) and "nothing listens" not in str(refused.value)
    # without TLS at all: the client finds out the node speaks TLS and says so
    with WorkflowClient([secure.endpoint], timeout_s=3.0) as plaintext, pytest.raises(ClientError) as refused:
        plaintext.list_task_defs()
    assert refused.value.code == "UNAVAILABLE", refused.value
    assert f"{secure.endpoint} speaks TLS and this client does not" in str(refused.value), refused.value


def test_https_needs_the_client_certificate_too(secure: Secure) -> None:
    certs = secure.certs
    with_certificate = ssl.create_default_context(cafile=str(certs.ca))
    with_certificate.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    with httpx.Client(verify=with_certificate, timeout=10.0) as https:
        assert https.get(f"{secure.http}/healthz").status_code == 200
        assert https.get(f"{secure.http}/api/metadata/taskdefs").status_code == 200
    # without the certificate, or in plain HTTP: the server hangs up without an answer (a refused
    # connection or a timeout would not show that)
    without_certificate = ssl.create_default_context(cafile=str(certs.ca))
    with httpx.Client(verify=without_certificate, timeout=10.0) as without, \
            pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)) as refused:
        without.get(f"{secure.http}/healthz")
    assert "refused" not in str(refused.value).lower(), refused.value
    with httpx.Client(timeout=10.0) as plaintext, pytest.raises(httpx.RemoteProtocolError,
                                                                 match="disconnected without sending a response"):
        plaintext.get(secure.http.replace("https://", "http://") + "/healthz")


def test_grpcurl_and_the_cli_with_the_printed_settings(secure: Secure) -> None:
    certs = secure.certs
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    listed = subprocess.run([grpcurl, "-cacert", str(certs.ca), "-cert", str(certs.client_cert), "-key",
                             str(certs.client_key), secure.endpoint, "list"], capture_output=True, text=True,
                            timeout=30)
    assert listed.returncode == 0 and "orchestrator.v1.WorkflowService" in listed.stdout, listed.stderr
    cli = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", secure.endpoint, "--json",
                          "cluster", "status"], capture_output=True, text=True, timeout=30,
                         env={**_env(), **certs.client_env()})
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["leader_id"] == "sealed"


def test_plaintext_beyond_loopback_is_refused_unless_allowed(tmp_path: Path, etcd: Any, redis_server: Any) -> None:
    argv = [sys.executable, "-m", "orchestrator.cli", "node", "--node-id", "exposed", "--listen",
            f"0.0.0.0:{free_port()}", "--http-listen", "", "--redis-url", redis_server.url,
            "--etcd", ",".join(etcd.endpoints), "--cluster", f"p{uuid.uuid4().hex[:8]}"]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "reachable beyond this host and no TLS is configured" in refused.stderr
    make_dev_certs(tmp_path / "certs")
    broken = subprocess.run([*argv, "--tls-cert", str(tmp_path / "certs/node.pem"), "--tls-key",
                             str(tmp_path / "certs/client.key")], capture_output=True, text=True, timeout=30)
    assert broken.returncode == 2 and "cannot be used" in broken.stderr   # a key that is not the certificate's


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_TLS_")}
