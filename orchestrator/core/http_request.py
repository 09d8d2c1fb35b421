"""Conductor's HTTP and HTTP_POLL tasks, the pure part: what to send and what the task's output is.

The node's executor (`orchestrator.cluster.http_tasks`) does the I/O; everything it decides
lives here so it can be read and tested without a network.

The input is Conductor's: an `http_request` object with `uri`, `method`, `headers`, `body`,
`accept` and `contentType` (both `application/json` unless given), `connectionTimeOut` and
`readTimeOut` in milliseconds (3000 each unless given, as in Conductor). The fields may also
be given directly in the task's input (the newer shape Orkes documents). HTTP_POLL adds
`terminationCondition` (JavaScript over `$.output.response`), `pollingInterval` (seconds),
`pollingStrategy` (FIXED, LINEAR_BACKOFF or EXPONENTIAL_BACKOFF) and `maxPollCount`.

The output is Conductor's too: `{"response": {"statusCode", "reasonPhrase", "headers", "body"}}`,
with headers as lists of values and a body parsed as JSON when it is JSON, else kept as text.
A status outside 2xx fails the attempt (the task definition's retries apply) with a reason that
names the status and the start of the body.

Where a task may connect is decided here too, by address (`AddressPolicy`, `address_class`):
public addresses, and loopback, link-local, private or reserved ones only inside a range the
node's `http_task_allow_cidrs` lists; the unspecified address, multicast and broadcast never.
The executor applies it to every address it is about to connect to (redirects included).
"""

from __future__ import annotations

import http
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .limits import MAX_DURATION_SECONDS

__all__ = ["HttpRequestError", "AddressDenied", "HttpRequest", "PollSpec", "AddressPolicy", "parse_request",
           "parse_poll", "response_output", "failure_reason", "address_class", "denied_reason", "plain_address",
           "parse_cidrs", "split_endpoint", "MAX_RESPONSE_BYTES"]

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
DEFAULT_TIMEOUT_MS = 3000            # Conductor's HttpTask.Input defaults for both timeouts
MAX_TIMEOUT_MS = 10 * 60 * 1000
MAX_RESPONSE_BYTES = 512 * 1024
"""A larger response body fails the attempt: the output must fit a task output (1 MiB by default)
with room for the headers, and a node must never hold an unbounded body in memory."""
MAX_POLLS = 10_000
POLL_STRATEGIES = ("FIXED", "LINEAR_BACKOFF", "EXPONENTIAL_BACKOFF")
MAX_REASON_BODY = 300


class HttpRequestError(ValueError):
    """The task's input does not describe a request we can send; the attempt fails with this reason."""


class AddressDenied(HttpRequestError):
    """The request (or a redirect it was given) would reach an address HTTP tasks may not call."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    uri: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    connect_timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    read_timeout_s: float = DEFAULT_TIMEOUT_MS / 1000


@dataclass(frozen=True)
class PollSpec:
    condition: str
    interval_s: float
    strategy: str
    max_polls: int

    def delay_s(self, polls_done: int) -> float:
        """How long to wait after poll number `polls_done` (1-based) before the next one."""
        if self.strategy == "LINEAR_BACKOFF":
            return self.interval_s * polls_done
        if self.strategy == "EXPONENTIAL_BACKOFF":
            return self.interval_s * float(2 ** min(polls_done - 1, 20))
        return self.interval_s


def _request_object(task_input: dict[str, Any]) -> dict[str, Any]:
    request = task_input.get("http_request")
    if request is None and "uri" in task_input:
        return task_input
    if request is None:
        raise HttpRequestError("missing HTTP request: the task's input must have an 'http_request' object "
                               "(uri, method, headers, body, ...)")
    if not isinstance(request, dict):
        raise HttpRequestError(f"http_request must be an object, not {type(request).__name__}")
    return request


def _whole_number_text(value: Any) -> bool:
    """'3000' (int() refuses '²', which isdigit() accepts, and 5,000 digits)."""
    return isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) <= 18


def _timeout_ms(request: dict[str, Any], name: str) -> float:
    value = request.get(name)
    if value is None:
        return DEFAULT_TIMEOUT_MS
    if _whole_number_text(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_MS:
        raise HttpRequestError(f"{name} must be milliseconds from 1 to {MAX_TIMEOUT_MS}, got {value!r}")
    return float(value)


def _content(body: Any, content_type: str) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, str) and "json" not in content_type.lower():
        return body.encode("utf-8")
    if isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_request(task_input: dict[str, Any]) -> HttpRequest:
    """The request an HTTP or HTTP_POLL task's input describes; HttpRequestError says what is wrong."""
    request = _request_object(task_input)
    uri = request.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        raise HttpRequestError("missing HTTP URI: http_request.uri must be the URL to call")
    parts = urlsplit(uri.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpRequestError(f"http_request.uri must be an http:// or https:// URL with a host, got {uri[:200]!r}")
    method = request.get("method")
    if not isinstance(method, str) or not method:
        raise HttpRequestError("no HTTP method specified: http_request.method must be one of " + ", ".join(METHODS))
    if method.upper() not in METHODS:
        raise HttpRequestError(f"http_request.method {method[:40]!r} is not one of {', '.join(METHODS)}")
    raw_headers = request.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise HttpRequestError("http_request.headers must be an object of header names to values")
    content_type = str(request.get("contentType") or "application/json")
    headers = {"Accept": str(request.get("accept") or "application/json"), "Content-Type": content_type}
    for name, value in raw_headers.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)
        if any(c in name + text for c in "\r\n\0"):
            raise HttpRequestError(f"http_request.headers: header {name[:60]!r} holds a line break or NUL")
        headers[str(name)] = text
    return HttpRequest(method=method.upper(), uri=uri.strip(), headers=headers,
                       content=_content(request.get("body"), content_type),
                       connect_timeout_s=_timeout_ms(request, "connectionTimeOut") / 1000,
                       read_timeout_s=_timeout_ms(request, "readTimeOut") / 1000)


def parse_poll(task_input: dict[str, Any]) -> PollSpec:
    """HTTP_POLL's polling settings (from http_request, or the task input itself)."""
    request = _request_object(task_input)

    def setting(name: str) -> Any:
        return request.get(name, task_input.get(name))

    condition = setting("terminationCondition")
    if not isinstance(condition, str) or not condition.strip():
        raise HttpRequestError("HTTP_POLL needs http_request.terminationCondition: JavaScript over "
                               "$.output.response that is true when polling is done")
    interval = setting("pollingInterval")
    interval = 60 if interval is None else interval
    if _whole_number_text(interval):
        interval = int(interval)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 <= interval <= MAX_DURATION_SECONDS:
        raise HttpRequestError(f"pollingInterval must be seconds from 0 to {MAX_DURATION_SECONDS}, got {interval!r}")
    strategy = str(setting("pollingStrategy") or "FIXED").upper()
    if strategy not in POLL_STRATEGIES:
        raise HttpRequestError(f"pollingStrategy must be one of {', '.join(POLL_STRATEGIES)}, got {strategy[:40]!r}")
    max_polls = setting("maxPollCount")
    max_polls = MAX_POLLS if max_polls in (None, 0) else max_polls
    if isinstance(max_polls, bool) or not isinstance(max_polls, int) or not 0 < max_polls <= MAX_POLLS:
        raise HttpRequestError(f"maxPollCount must be a whole number from 1 to {MAX_POLLS}, got {max_polls!r}")
    return PollSpec(condition=condition, interval_s=float(interval), strategy=strategy, max_polls=max_polls)


def parse_body(content: bytes) -> Any:
    """A response body as Conductor gives it: JSON when it parses, else the text."""
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def response_output(status: int, headers: list[tuple[str, str]], content: bytes) -> dict[str, Any]:
    """The task output for a response: Conductor's `response` object."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name, []).append(value)
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return {"response": {"statusCode": status, "reasonPhrase": phrase, "headers": grouped,
                         "body": parse_body(content) if content else None}}


def failure_reason(request: HttpRequest, status: int, content: bytes) -> str:
    """Why an attempt that got a status outside 2xx failed, in one line a person can act on."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    body = " ".join(content[:MAX_REASON_BODY * 2].decode("utf-8", errors="replace").split())
    if len(body) > MAX_REASON_BODY:
        body = body[:MAX_REASON_BODY] + "..."
    return (f"{request.method} {request.uri[:200]} answered {status} {phrase}"
            + (f": {body}" if body else ""))


# ---------------------------------------------------------------- where an HTTP task may connect

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")   # "this host on this network": 0.0.0.0 reaches this machine
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",   # RFC 1918
    "100.64.0.0/10",                                     # shared address space (carrier-grade NAT)
    "fc00::/7", "fec0::/10"))                            # unique local, and the old site-local
_NAT64 = ipaddress.ip_network("64:ff9b::/96")           # an IPv4 address behind a NAT64 gateway

ALWAYS_DENIED = ("unspecified", "multicast", "broadcast")
"""Address classes no setting allows: none of them is a server (0.0.0.0 and :: reach this machine)."""
_WHAT = {
    "unspecified": "the unspecified address (it reaches this machine)",
    "loopback": "loopback addresses (this machine)",
    "link-local": "link-local addresses (cloud metadata services, such as 169.254.169.254, answer there)",
    "multicast": "multicast addresses",
    "broadcast": "the broadcast address",
    "private": "private addresses",
    "reserved": "reserved and special-purpose addresses",
}


def plain_address(address: IPAddress) -> IPAddress:
    """An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_class(address: IPAddress) -> str | None:
    """Why an HTTP task is kept from `address` by default ('loopback', 'link-local', 'private',
    ...), or None for a public address. IPv4 inside IPv6 (mapped, 6to4, NAT64) is judged as the
    IPv4 address it stands for."""
    address = plain_address(address)
    if address.is_unspecified or address in _THIS_NETWORK:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address == _BROADCAST:
        return "broadcast"
    if any(address in network for network in _PRIVATE):
        return "private"
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.sixtofour or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None)
        if inner is not None and (kind := address_class(inner)) is not None:
            return kind
    if not address.is_global or address.is_reserved:
        return "reserved"
    return None


def parse_cidrs(cidrs: list[str] | tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The ranges of `http_task_allow_cidrs`; ValueError names one that is no range."""
    networks = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"http_task_allow_cidrs: {text!r} is not an address range (such as 10.0.0.0/8 or "
                             "fd00::/8)") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses HTTP tasks may connect to: public ones, and those of the classes that can
    be allowed (loopback, link-local, private, reserved) inside a range the operator lists."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_cidrs(cls, cidrs: list[str] | tuple[str, ...]) -> AddressPolicy:
        return cls(parse_cidrs(cidrs))

    def denied(self, address: IPAddress) -> str | None:
        """The class of `address` if HTTP tasks may not connect to it, else None."""
        kind = address_class(address)
        if kind is None:
            return None
        if kind not in ALWAYS_DENIED and any(plain_address(address) in network or address in network
                                             for network in self.allow):
            return None
        return kind


def denied_reason(host: str, port: int, address: IPAddress, kind: str) -> str:
    """The one line an attempt refused by the address policy fails with."""
    at = host if host.strip("[]") == str(address) else f"{host} ({address})"
    unless = "" if kind in ALWAYS_DENIED else "; the node's http_task_allow_cidrs may allow a range of them"
    return f"{at}:{port} is a {kind} address: HTTP tasks may not call {_WHAT[kind]}{unless}"


def split_endpoint(endpoint: str) -> tuple[str, int] | None:
    """('etcd-1', 2379) of 'etcd-1:2379' or '[::1]:2379'; None when it names no port."""
    host, _, port = endpoint.rpartition(":")
    if not port.isascii() or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)
