"""`python -m devtools cluster|drill`: the local three-node cluster and the failover drill.

`make cluster` and `make drill` run these; they are development tools, not the product CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from worker import WorkflowClient

from .certs import make_dev_certs
from .drill import register_demo, run_drill, write_report
from .local_cluster import ClusterSettings, LocalCluster, wait_for_leader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools", description=__doc__)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    local = commands.add_parser("cluster", help="run etcd x3, Redis, three nodes and a demo worker "
                                                "in the foreground (Ctrl-C stops them all)")
    local.add_argument("--config", default="deploy/local-cluster.yaml", help="cluster settings (YAML)")
    local.add_argument("--dir", default="run/local-cluster", help="data and logs")
    local.add_argument("--no-demo", action="store_true", help="do not run the demo workflow")
    local.add_argument("--secure", action="store_true",
                       help="mutual TLS on every port, with a throwaway CA and client certificate made here")
    local.set_defaults(handler=cluster_command)

    drill = commands.add_parser("drill", help="kill the leader repeatedly under load and check nothing was lost")
    drill.add_argument("--config", default="deploy/local-cluster.yaml", help="cluster settings (YAML)")
    drill.add_argument("--dir", default="run/drill", help="data and logs")
    drill.add_argument("--kills", type=int, default=10, help="SIGKILLs of the leader")
    drill.add_argument("--terms", type=int, default=5, help="SIGTERMs of the leader afterwards (0 = none)")
    drill.add_argument("--rate", type=float, default=20.0, help="workflows started per second")
    drill.add_argument("--report", default="run/drill/report.json", help="where the JSON report goes")
    drill.set_defaults(handler=drill_command)
    args = parser.parse_args(argv)
    return int(args.handler(args))


def cluster_command(args: argparse.Namespace) -> int:
    base = Path(args.dir)
    # The election state is ephemeral (a new etcd each run; its revisions, hence epochs, start
    # at 1 again) while Redis keeps its AOF: the cluster forgets the old fencing epoch, which
    # is safe because every node of the previous run is gone (this command started them all).
    shutil.rmtree(base / "etcd", ignore_errors=True)
    settings = ClusterSettings.load(args.config)
    print(f"starting {settings.etcd_members} etcd members, Redis (AOF) on port {settings.redis_port}, "
          f"nodes on ports {', '.join(map(str, settings.node_ports))} and {settings.workers} demo worker(s)")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    certs = make_dev_certs(base / "certs") if args.secure else None
    if certs is not None:   # this process, its demo worker and the CLI lines below use the client certificate
        os.environ.update(certs.client_env())
        print(f"mutual TLS: a throwaway CA and certificates in {base / 'certs'}/")
    with LocalCluster(base, settings, fresh_election=True, certs=certs).start() as cluster:
        client = WorkflowClient(cluster.endpoints)
        status = wait_for_leader(client, 30.0, members=len(cluster.nodes))
        register_demo(client)
        print(f"\nleader: {status['leader_id']} at {status['leader_address']} (epoch {status['epoch']})")
        for member in status["members"]:
            print(f"  member {member['node_id']} {member['address']} {member['role']}")
        print()
        for node_id in cluster.nodes:
            console = cluster.console_of(node_id)
            print(f"console {node_id}: {console}/  (metrics: {console}/metrics, Conductor API: {console}/api)")
        if not args.no_demo:
            _run_demo(client)
        endpoints = ",".join(cluster.endpoints)
        grpcurl = "-plaintext"
        env = ""
        if certs is not None:
            grpcurl = f"-cacert {certs.ca} -cert {certs.client_cert} -key {certs.client_key}"
            env = "".join(f"export {k}={v}\n  " for k, v in certs.client_env().items())
        print(f"""
logs and data: {base}/ (nodes: {base}/logs/node-N.log)
try:
  {env}.venv/bin/grpcurl {grpcurl} {cluster.endpoints[0]} list
  .venv/bin/grpcurl {grpcurl} -d '{{"name": "order_fulfilment", "input": {{"order_id": "A-2"}}}}' \\
      {cluster.endpoints[0]} orchestrator.v1.WorkflowService/StartWorkflow
  .venv/bin/orchestrator --endpoints {endpoints} cluster status
  .venv/bin/orchestrator workflow start order_fulfilment --input '{{"order_id": "A-3"}}' --wait 10
  kill -9 <pid of the leader>   # pids: {", ".join(f"{n}={p.pid}" for n, p in cluster.nodes.items())}
Ctrl-C stops everything.""", flush=True)
        try:
            while not stop["now"]:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        print("\nstopping the cluster", flush=True)
        client.close()
    return 0


def _run_demo(client: Any) -> None:
    workflow_id = client.start_workflow("order_fulfilment", {"order_id": "A-1", "email": "ada@example.com"})
    print(f"\ndemo: started order_fulfilment {workflow_id}")
    deadline = time.monotonic() + 30
    workflow = client.get_workflow(workflow_id)
    while workflow["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
        workflow = client.get_workflow(workflow_id)
    print(f"demo: {workflow['status']} with output {json.dumps(workflow.get('output', {}))}")
    for task in workflow.get("tasks", []):
        print(f"  {task['reference_name']:8} {task['status']:10} by {task.get('worker_id', '')} "
              f"output {json.dumps(task.get('output', {}))}")


def drill_command(args: argparse.Namespace) -> int:
    base = Path(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    settings = ClusterSettings.load(args.config)
    settings.name = "drill"
    settings.node_ports = [0] * len(settings.node_ports)   # never collide with a running `make cluster`
    settings.redis_port = 0
    reports = []
    with LocalCluster(base, settings).start() as cluster:
        print(f"drill: three nodes, {settings.etcd_members} etcd members, load {args.rate} workflows/s", flush=True)
        reports.append(run_drill(cluster, kills=args.kills, sig=signal.SIGKILL, rate_per_s=args.rate))
        print(reports[-1].summary(), flush=True)
        if args.terms:
            reports.append(run_drill(cluster, kills=args.terms, sig=signal.SIGTERM, rate_per_s=args.rate))
            print(reports[-1].summary(), flush=True)
    write_report(reports, Path(args.report))
    print(f"report written to {args.report}")
    return 0 if all(r.ok for r in reports) else 1



if __name__ == "__main__":
    sys.exit(main())
