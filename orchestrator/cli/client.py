"""How a command reaches the cluster: a WorkflowClient made from the flags given before the
command (endpoints, token, namespace, TLS), the action run with it, and its result printed."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .inputs import UsageError
from .output import EXIT_REFUSED, EXIT_USAGE, Action, Reply, View, print_reply


def call(args: argparse.Namespace, action: Action, view: View | None = None) -> int:
    """Run `action` with a client of the cluster; a refusal or bad input is one line on stderr."""
    # gRPC's own log lines (a failed TLS handshake at INFO) would land beside the one-line error
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from worker import ClientError

    client = connect(endpoints(args.endpoints), args)
    try:
        result = action(client, args)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        client.close()
    return print_reply(result if isinstance(result, Reply) else Reply(result), args, view)


def endpoints(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (as `config.split_list`, without loading the node's settings
    and Redis client: a command that fails should fail at once)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def connect(addresses: list[str], args: argparse.Namespace) -> Any:
    """A WorkflowClient with the token and TLS files given before the command (each falls back
    to its environment variable). It fails fast: when nothing listens at any endpoint a person
    is told at once, not after the client's 10 s of retries."""
    from worker import WorkflowClient

    return WorkflowClient(addresses, token=getattr(args, "token", None), namespace=getattr(args, "namespace", None),
                          tls_ca=getattr(args, "tls_ca", None), tls_cert=getattr(args, "tls_cert", None),
                          tls_key=getattr(args, "tls_key", None), fail_fast=True)
