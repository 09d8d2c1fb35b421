"""A throwaway certificate authority for a secure local cluster (`make cluster SECURE=1`) and
the TLS tests: a CA, one certificate for the nodes (loopback names, server and client use, as
nodes also call each other) and one for clients. Made with the openssl command Debian ships;
valid two days; never for production."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class DevCerts:
    ca: Path
    node_cert: Path
    node_key: Path
    client_cert: Path
    client_key: Path

    def node_flags(self) -> list[str]:
        return ["--tls-cert", str(self.node_cert), "--tls-key", str(self.node_key), "--tls-ca", str(self.ca)]

    def client_env(self) -> dict[str, str]:
        """The variables the SDK, the CLI and workers read (ORCHESTRATOR_TLS_*)."""
        return {"ORCHESTRATOR_TLS_CA": str(self.ca), "ORCHESTRATOR_TLS_CERT": str(self.client_cert),
                "ORCHESTRATOR_TLS_KEY": str(self.client_key)}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue_cert(folder: Path, name: str, common_name: str, *, server: bool = False) -> tuple[Path, Path]:
    """`<name>.pem` and `<name>.key` in `folder`, signed by its CA (`ca.pem`, `ca.key`), for
    loopback names; a client certificate unless `server`. etcd with --client-cert-auth takes
    `common_name` as the user name."""
    usage = "serverAuth,clientAuth" if server else "clientAuth"
    (folder / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
                                        f"extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    _openssl("req", *CURVE, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
             cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", DAYS, "-extfile", f"{name}.ext", cwd=folder)
    (folder / f"{name}.key").chmod(0o600)
    return folder / f"{name}.pem", folder / f"{name}.key"


def make_dev_certs(folder: Path) -> DevCerts:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *CURVE, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
             "-subj", "/CN=orchestrator local CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    issue_cert(folder, "node", "orchestrator node", server=True)
    issue_cert(folder, "client", "orchestrator client")
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return DevCerts(folder / "ca.pem", folder / "node.pem", folder / "node.key", folder / "client.pem",
                    folder / "client.key")
