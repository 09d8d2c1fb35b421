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
"""

from __future__ import annotations

import http
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .limits import MAX_DURATION_SECONDS

__all__ = ["HttpRequestError", "HttpRequest", "PollSpec", "parse_request", "parse_poll", "response_output",
           "failure_reason", "blocked_target", "MAX_RESPONSE_BYTES"]

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


def _timeout_ms(request: dict[str, Any], name: str) -> float:
    value = request.get(name)
    if value is None:
        return DEFAULT_TIMEOUT_MS
    if isinstance(value, str) and value.strip().isdigit():
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
    if isinstance(interval, str) and interval.strip().isdigit():
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


def _normal_host(host: str) -> str:
    host = host.strip("[]").lower()
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_loopback:
        return "127.0.0.1"
    return str(address)


def blocked_target(uri: str, protected: list[str]) -> str | None:
    """Which of the cluster's own services (host:port of etcd and Redis) `uri` would reach, if any.

    An HTTP task runs with the node's network position, so a workflow could otherwise talk to
    the etcd or Redis the cluster itself depends on (etcd serves an HTTP gateway on its client
    port). Loopback addresses are treated as one host. Names are compared as written: put
    anything else that must stay out of reach behind the network's own rules."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    target = (_normal_host(parts.hostname), port)
    for endpoint in protected:
        host, _, port_text = endpoint.rpartition(":")
        if port_text.isdigit() and (_normal_host(host or "127.0.0.1"), int(port_text)) == target:
            return endpoint
        if target[0] == "127.0.0.1" and port_text.isdigit() and int(port_text) == port and host in ("", "0.0.0.0"):
            return endpoint
    return None
