"""`orchestrator node`: run one node in the foreground, its settings from flags and --config."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from ..output import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from ...config import NodeConfig

# How a node reaches etcd and Redis securely: setting -> help (flags --etcd-tls-ca, --redis-username, ...).
INFRASTRUCTURE_SECURITY = {
    "etcd_tls_ca_file": "PEM CA of etcd's certificate (TLS to etcd)",
    "etcd_tls_cert_file": "this node's client certificate for etcd (etcd --client-cert-auth)",
    "etcd_tls_key_file": "its private key",
    "redis_username": "the Redis ACL user this node connects as",
    "redis_password_file": "a file holding that user's password",
    "redis_tls_ca_file": "PEM CA of Redis's certificate (with a rediss:// URL)",
    "redis_tls_cert_file": "this node's client certificate for Redis (tls-auth-clients yes)",
    "redis_tls_key_file": "its private key",
}
# A node's links to Redis and its namespaces' quotas: setting -> (flag, type, help).
STORE_LIMIT_FLAGS: dict[str, tuple[str, type, str]] = {
    "redis_socket_timeout_s": ("--redis-timeout", float, "seconds a Redis command may go unanswered before the "
                               "caller gets UNAVAILABLE (default 5; a blocking read: its own wait on top)"),
    "redis_connect_timeout_s": ("--redis-connect-timeout", float, "seconds a connection to Redis may take to "
                                "open (default 2)"),
    "redis_blocking_connections": ("--redis-blocking-connections", int, "connections blocking reads "
                                   "(ReceiveEvents, event handlers, WAIT topics, WatchWorkflow) may hold at once "
                                   "(default 64); past them a wait holds none"),
    "quota_workflows_in_flight": ("--quota-workflows-in-flight", int, "workflows each namespace may have running, "
                                  "paused or compensating; starts past it are refused (default 1000000; 0: no limit)"),
    "quota_event_handlers": ("--quota-event-handlers", int, "event handlers each namespace may register "
                             "(default 1000; 0: no limit)"),
    "quota_topics": ("--quota-topics", int, "event topics each namespace may use (default 10000; 0: no limit)"),
    "quota_consumer_groups": ("--quota-consumer-groups", int, "subscription groups each namespace may use "
                              "(default 10000; 0: no limit)"),
}


def add_node_command(commands: Any) -> None:
    node = commands.add_parser("node", help="run one orchestrator node in the foreground")
    for flags in (_address_flags, _redis_flags, _cluster_flags, _log_flags, _security_flags, _task_flags):
        flags(node)
    node.set_defaults(handler=run_node)


def _address_flags(node: argparse.ArgumentParser) -> None:
    node.add_argument("--config", help="YAML file with node settings (see deploy/)")
    node.add_argument("--node-id", help="this node's name in the cluster (default: the host name)")
    node.add_argument("--listen", help="host:port to serve gRPC on")
    node.add_argument("--advertise", help="host:port other nodes and clients reach this node at")
    node.add_argument("--http-listen", help="host:port of the web console and /metrics (default: the gRPC "
                                            "port + 1000 on the same host; \"\" serves none)")


def _redis_flags(node: argparse.ArgumentParser) -> None:
    node.add_argument("--redis-url", help="the Redis to keep state in, as redis://host:port/db")
    node.add_argument("--redis-sentinels", help="comma-separated Sentinel host:port list (instead of --redis-url)")
    node.add_argument("--redis-master", help="the master name the Sentinels monitor")
    node.add_argument("--redis-cluster", help="comma-separated host:port of some servers of a Redis Cluster (instead "
                                              "of --redis-url): the state on it, partitioned over its slots")
    node.add_argument("--redis-min-replicas", dest="redis_min_replicas", type=int,
                      help="acknowledge nothing until this many Redis replicas hold it (default 0: the master "
                           "alone; what it acknowledged but had not yet replicated is lost if it dies)")
    node.add_argument("--redis-replica-timeout-ms", dest="redis_replica_timeout_ms", type=int,
                      help="how long a write waits for those replicas before the caller gets UNAVAILABLE "
                           "(default 1000)")


def _cluster_flags(node: argparse.ArgumentParser) -> None:
    node.add_argument("--etcd", dest="etcd_endpoints", help="comma-separated etcd endpoints host:port")
    node.add_argument("--cluster", help="cluster name (election prefix and Redis key prefix)")
    node.add_argument("--lease-ttl", dest="lease_ttl_s", type=float,
                      help="seconds the leader's etcd lease lives without renewal (failover detection time)")
    for name, (flag, kind, text) in STORE_LIMIT_FLAGS.items():
        node.add_argument(flag, dest=name, type=kind, help=text)
    node.add_argument("--leader-redis-timeout", dest="leader_redis_timeout_s", type=float,
                      help="seconds a leader's clocks may go without completing a pass against Redis before it "
                           "resigns so that another node leads; it stands again once Redis answers (default 2)")
    node.add_argument("--retention", dest="retention_s", type=float,
                      help="seconds a finished workflow stays in Redis before it is archived (default 7 days)")
    node.add_argument("--archive-dir", help="where archived workflows go; every node must see the same directory")


def _log_flags(node: argparse.ArgumentParser) -> None:
    node.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    node.add_argument("--log-format", choices=("text", "json"),
                      help="text (default) or json: one JSON object per line with time, level, logger, message, "
                           "node and, when known, workflow_id, task_id, epoch")


def _security_flags(node: argparse.ArgumentParser) -> None:
    node.add_argument("--tokens-file", help="YAML/JSON file of tokens and their roles (admin, operator, worker, "
                                            "reader); every call then needs one (default: none, open)")
    node.add_argument("--tls-cert", dest="tls_cert_file", help="PEM certificate of the gRPC and HTTP ports (TLS)")
    node.add_argument("--tls-key", dest="tls_key_file", help="its PEM private key")
    node.add_argument("--tls-ca", dest="tls_ca_file",
                      help="PEM CA whose certificates clients must present (mutual TLS; nodes present theirs too)")
    node.add_argument("--allow-plaintext", action="store_true", default=None,
                      help="serve plaintext beyond loopback (refused otherwise): only behind something that encrypts")
    for name, text in INFRASTRUCTURE_SECURITY.items():
        flag = name if name == "redis_password_file" else name.removesuffix("_file")
        node.add_argument("--" + flag.replace("_", "-"), dest=name, help=text)


def _task_flags(node: argparse.ArgumentParser) -> None:
    node.add_argument("--http-tasks", dest="http_task_concurrency", type=int,
                      help="HTTP and HTTP_POLL tasks this node calls at once (default 32); 0: the node runs none "
                           "and workers that serve task type HTTP do")
    node.add_argument("--http-task-allow-cidrs", dest="http_task_allow_cidrs",
                      help="comma-separated address ranges HTTP tasks may call although they are loopback, "
                           "link-local, private or reserved, e.g. 10.0.0.0/8 (default: public addresses only; the "
                           "cluster's etcd and Redis never)")
    node.add_argument("--trace-file", help="also write this node's trace spans to this file, one JSON object per "
                                           "line (OTLP export is set with the OTEL_EXPORTER_OTLP_* variables)")


def run_node(args: argparse.Namespace) -> int:
    from ...cluster.event_loop import loop_factory
    from ...cluster.logs import setup_logging
    from ...service.errors import serving_as
    from ...node import Node

    try:
        config = _load_config(args)
        setup_logging(config.node_id, config.log_level, config.log_format)
        serving_as(config.node_id)
        node = Node(config)
    except (ValueError, OSError) as exc:   # a setting, or a file it names, that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(node.run_until_signalled())
    return EXIT_OK


def _load_config(args: argparse.Namespace) -> NodeConfig:
    """The node's settings: --config's file, each flag given over it."""
    from ...config import NodeConfig

    return NodeConfig.load(args.config, node_id=args.node_id, listen=args.listen, advertise=args.advertise,
                           http_listen=args.http_listen,
                           redis_url=args.redis_url, redis_sentinels=args.redis_sentinels,
                           redis_cluster=args.redis_cluster,
                           redis_master=args.redis_master, etcd_endpoints=args.etcd_endpoints,
                           redis_min_replicas=args.redis_min_replicas,
                           redis_replica_timeout_ms=args.redis_replica_timeout_ms,
                           cluster=args.cluster, lease_ttl_s=args.lease_ttl_s, log_level=args.log_level,
                           leader_redis_timeout_s=args.leader_redis_timeout_s,
                           retention_s=args.retention_s, archive_dir=args.archive_dir,
                           log_format=args.log_format, trace_file=args.trace_file,
                           http_task_concurrency=args.http_task_concurrency, tokens_file=args.tokens_file,
                           http_task_allow_cidrs=args.http_task_allow_cidrs,
                           tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_key_file,
                           tls_ca_file=args.tls_ca_file, allow_plaintext=args.allow_plaintext,
                           **{name: getattr(args, name) for name in INFRASTRUCTURE_SECURITY},
                           **{name: getattr(args, name) for name in STORE_LIMIT_FLAGS})
