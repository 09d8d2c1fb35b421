"""TLS for the node's ports: its certificate, and the CA whose certificates it asks clients for.

`tls_cert_file` + `tls_key_file` turn TLS on for the gRPC port and the HTTP port; `tls_ca_file`
adds mutual TLS: every client (workers, clients, the CLI, other nodes) must present a
certificate that CA signed, and nodes present theirs when they call each other. Without TLS a
node serves plaintext only on loopback, as a development cluster does, unless its settings say
`allow_plaintext: true` in so many words.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["TlsFiles", "TlsError", "is_loopback"]


class TlsError(ValueError):
    """The TLS files cannot be used, or plaintext was asked for where it is refused."""


@dataclass(frozen=True)
class TlsFiles:
    cert_file: str
    key_file: str
    ca_file: str              # "": TLS without client certificates
    cert: bytes
    key: bytes
    ca: bytes | None

    @classmethod
    def load(cls, cert_file: str, key_file: str, ca_file: str = "") -> TlsFiles:
        """Read and check the files now, so that a node with unusable ones does not start."""
        try:
            cert, key = Path(cert_file).read_bytes(), Path(key_file).read_bytes()
            ca = Path(ca_file).read_bytes() if ca_file else None
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            if ca_file:
                context.load_verify_locations(ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsError(f"the TLS certificate, key or CA cannot be used: {exc}") from None
        return cls(cert_file, key_file, ca_file, cert, key, ca)

    @property
    def mutual(self) -> bool:
        return self.ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=self.mutual)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """What this node presents when it calls another node (its own certificate, as a client)."""
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


def is_loopback(address: str) -> bool:
    """Whether host:port (or [v6]:port) listens on loopback only."""
    host = address.rpartition(":")[0].strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False
