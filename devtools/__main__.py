"""`python -m devtools cluster|restart-node|drill|redis-cluster`: the local three-node cluster, the failover
drill, and a local Redis Cluster on its own (the partitioned layout's ground, issue 23).

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

import yaml

from worker import WorkflowClient

from .certs import DevCerts, make_dev_certs
from .drill import register_demo, run_drill, write_report
from .local_cluster import ClusterSettings, LocalCluster, PortPlan, wait_for_leader
from .procs import ManagedProcess, ProcessError, describe_process, port_taken
from .redis_cluster import LocalRedisCluster, start_redis_cluster
from .run_dir import RunDir, ask_restart, leftovers, owner_of, running

DEFAULT_DIR = "run/local-cluster"
REDIS_CLUSTER_DIR = "run/redis-cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools", description=__doc__)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    local = commands.add_parser("cluster", help="run etcd x3, Redis, three nodes and a demo worker "
                                                "in the foreground (Ctrl-C stops them all)")
    local.add_argument("--config", default="deploy/local-cluster.yaml", help="cluster settings (YAML)")
    local.add_argument("--dir", default=DEFAULT_DIR, help="data and logs")
    local.add_argument("--no-demo", action="store_true", help="do not run the demo workflow")
    local.add_argument("--secure", action="store_true",
                       help="mutual TLS on every port, with a throwaway CA and client certificate made here")
    local.set_defaults(handler=cluster_command)

    restart = commands.add_parser("restart-node", help="start a node of the running `make cluster` again "
                                                       "(after it exited or was killed), with its same ports "
                                                       "and flags; the cluster's supervisor runs it")
    restart.add_argument("node", help="the node's id, e.g. node-2")
    restart.add_argument("--dir", default=DEFAULT_DIR, help="the run folder of that `make cluster`")
    restart.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node")
    restart.set_defaults(handler=restart_node_command)

    drill = commands.add_parser("drill", help="kill the leader repeatedly under load and check nothing was lost")
    drill.add_argument("--config", default="deploy/local-cluster.yaml", help="cluster settings (YAML)")
    drill.add_argument("--dir", default="run/drill", help="data and logs")
    drill.add_argument("--kills", type=int, default=10, help="SIGKILLs of the leader")
    drill.add_argument("--terms", type=int, default=5, help="SIGTERMs of the leader afterwards (0 = none)")
    drill.add_argument("--rate", type=float, default=20.0, help="workflows started per second")
    drill.add_argument("--report", default="run/drill/report.json", help="where the JSON report goes")
    drill.set_defaults(handler=drill_command)

    partitioned = commands.add_parser("redis-cluster", help="run a Redis Cluster of its own (3 masters with a replica "
                                                            "each) in the foreground until Ctrl-C; nodes use it "
                                                            "through their redis_cluster setting (its seeds)")
    partitioned.add_argument("--dir", default=REDIS_CLUSTER_DIR, help="data and logs (emptied first)")
    partitioned.add_argument("--masters", type=int, default=3, help="masters (at least 3)")
    partitioned.add_argument("--replicas", type=int, default=1, help="replicas of each master")
    partitioned.set_defaults(handler=redis_cluster_command)
    args = parser.parse_args(argv)
    # Ctrl-C stops every command, even one started where SIGINT is ignored (a shell without job control
    # starts its background commands so, and a child inherits it): Python raises KeyboardInterrupt only
    # when it found SIGINT's default disposition at start
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        # outside a command's own wait (while it starts): its launchers and `with` blocks stopped what it
        # started on the way out
        print("\ninterrupted", file=sys.stderr, flush=True)
        return 130


def _refuse(message: str) -> int:
    """One line on stderr, exit status 1: what is wrong and what to do."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def _load_settings(path: str) -> ClusterSettings:
    try:
        return ClusterSettings.load(path)
    except TypeError as exc:   # a setting of the wrong shape
        raise ValueError(f"{path}: {exc}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def _held_by(run_dir: Path, holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "?")
    argv = holder.get("argv") or []
    config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else ""
    kind = "make drill" if "drill" in argv else "make cluster"
    return (f"a `{kind}` is already running in {run_dir}/ (pid {pid}"
            f"{', started ' + holder['started_at'] if holder.get('started_at') else ''}"
            f"{', --config ' + config if config else ''}); stop it first (Ctrl-C in its terminal, or kill {pid}), "
            "or give this one another --dir and other ports; nothing was started or deleted")


def _taken_ports(plan: PortPlan, run_dir: Path) -> str:
    """'' when every port of `plan` is free, else one line saying which are taken, and by whom."""
    by_owner: dict[str, list[str]] = {}
    stop: set[int] = set()
    for port, role in plan.roles():
        if port_taken(port):
            owner, pid = owner_of(port, run_dir)
            by_owner.setdefault(owner, []).append(f"{port} ({role})")
            if pid:
                stop.add(pid)
    if not by_owner:
        return ""
    parts = [f"{', '.join(ports)} {'is' if len(ports) == 1 else 'are'} taken by {owner}"
             for owner, ports in by_owner.items()]
    advice = (f"stop {'it' if len(stop) == 1 else 'them'} first (kill {' '.join(map(str, sorted(stop)))}) or "
              "choose other ports" if stop else "choose other ports")
    several = sum(map(len, by_owner.values())) > 1
    return f"{'ports' if several else 'port'} {'; '.join(parts)}; {advice}; nothing was started or deleted"


def _hold_run_folder(args: argparse.Namespace) -> tuple[Path, ClusterSettings, RunDir] | str:
    """The settings and the run folder, held (its lock) until `run.release()`; or why not."""
    base = Path(args.dir)
    try:
        settings = _load_settings(args.config)
    except ValueError as exc:
        return str(exc)
    run = RunDir(base)
    holder = run.acquire(config=args.config)
    if holder is not None:
        return _held_by(base, holder)
    return base, settings, run


def cluster_command(args: argparse.Namespace) -> int:
    held = _hold_run_folder(args)
    if isinstance(held, str):
        return _refuse(held)
    base, settings, run = held
    try:
        left = leftovers(base)
        if left:
            return _refuse(f"processes of an earlier `make cluster` in {base}/ still run without it (it was killed): "
                           f"{', '.join(describe_process(pid, 40) for pid in left)}; stop them first "
                           f"(kill {' '.join(map(str, left))}); nothing was started or deleted")
        cluster = LocalCluster(base, settings, fresh_election=True)
        plan = cluster.plan()
        taken = _taken_ports(plan, base)
        if taken:
            return _refuse(taken)
        run.write_state(ports={role: port for port, role in plan.roles()})
        return _run_cluster(args, base, settings, cluster, plan, run)
    finally:
        run.release()


def _run_cluster(args: argparse.Namespace, base: Path, settings: ClusterSettings, cluster: LocalCluster,
                 plan: PortPlan, run: RunDir) -> int:
    # The election state is ephemeral (a new etcd each run; its revisions, hence epochs, start
    # at 1 again) while Redis keeps its AOF: the cluster forgets the old fencing epoch, which
    # is safe because every node of the previous run is gone (this command started them all,
    # the run folder's lock says none runs, and no port of this cluster is taken).
    shutil.rmtree(base / "etcd", ignore_errors=True)
    redis = (f"a Redis Cluster of {settings.redis_cluster_masters} masters and as many replicas"
             if settings.redis_cluster_masters else f"Redis (AOF) on port {plan.redis}")
    print(f"starting {settings.etcd_members} etcd members, {redis}, "
          f"nodes on ports {', '.join(map(str, plan.nodes.values()))} and {settings.workers} demo worker(s)",
          flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    certs = make_dev_certs(base / "certs") if args.secure else None
    if certs is not None:   # this process, its demo worker and the CLI lines below use the client certificate
        os.environ.update(certs.client_env())
        cluster.certs = certs
        print(f"mutual TLS: a throwaway CA and certificates in {base / 'certs'}/")
    try:
        cluster.start()
    except ProcessError as exc:   # stopped again by start(); the log tail says why
        return _refuse(f"the cluster did not start: {exc}; logs in {base}/")
    with cluster:
        client = WorkflowClient(cluster.endpoints)
        try:   # Ctrl-C from here on (the demo included) stops the cluster as from its wait
            _serve_cluster(args, base, run, cluster, client, certs, stop)
        except KeyboardInterrupt:
            pass
        print("\nstopping the cluster", flush=True)
        client.close()
    return 0


def _serve_cluster(args: argparse.Namespace, base: Path, run: RunDir, cluster: LocalCluster,
                   client: WorkflowClient, certs: DevCerts | None, stop: dict[str, bool]) -> None:
    """The started cluster: its leader, consoles, the demo and what to try, then its supervision until
    Ctrl-C or SIGTERM."""
    _record_nodes(run, cluster)
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
  {_restart_command(args, "node-N")}   # starts a node that exited again
Ctrl-C stops everything.""", flush=True)
    _supervise(cluster, run, args, stop)


def _restart_command(args: argparse.Namespace, node_id: str) -> str:
    """The exact command that starts `node_id` of this cluster again."""
    python = Path(sys.executable)
    try:
        python = python.relative_to(Path.cwd())
    except ValueError:
        pass
    folder = "" if args.dir == DEFAULT_DIR else f" --dir {args.dir}"
    return f"{python} -m devtools restart-node {node_id}{folder}"


def _ended(proc: ManagedProcess) -> str:
    code = proc.returncode
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _record_nodes(run: RunDir, cluster: LocalCluster) -> None:
    """Each node, and the PID of every process of the cluster, in the run folder's cluster.json."""
    everything = [*(m.process for m in (cluster.etcd.members if cluster.etcd else []) if m.process),
                  *([cluster.redis.process] if cluster.redis is not None else []), *cluster.nodes.values(),
                  *cluster.workers]
    run.write_state(nodes={node_id: {"pid": proc.pid, "alive": proc.alive(), "endpoint": cluster.endpoint_of(node_id),
                                     "console": cluster.console_of(node_id), "log": str(proc.log_path)}
                           for node_id, proc in cluster.nodes.items()},
                    processes={proc.name: proc.pid for proc in everything if proc.alive()})


def _supervise(cluster: LocalCluster, run: RunDir, args: argparse.Namespace, stop: dict[str, bool]) -> None:
    """Until Ctrl-C or SIGTERM: one line when a process of the cluster ends, and the restarts that
    `python -m devtools restart-node` asks for (this process owns the nodes: Ctrl-C still stops them)."""
    reported: set[int] = set()
    while not stop["now"]:
        changed = False
        for node_id, proc in list(cluster.nodes.items()):
            if not proc.alive() and proc.pid not in reported:
                reported.add(proc.pid)
                changed = True
                print(f"{node_id} (pid {proc.pid}) {_ended(proc)}; to start it again: "
                      f"{_restart_command(args, node_id)}   (its log: {proc.log_path})", flush=True)
        others = [*(m.process for m in (cluster.etcd.members if cluster.etcd else []) if m.process),
                  *([cluster.redis.process] if cluster.redis is not None else []), *cluster.workers]
        for proc in others:
            if not proc.alive() and proc.pid not in reported:
                reported.add(proc.pid)
                print(f"{proc.name} (pid {proc.pid}) {_ended(proc)}; it is not restarted: Ctrl-C and `make cluster` "
                      f"again start everything (its log: {proc.log_path})", flush=True)
        for node_id, token in run.requests():
            run.answer(token, *_restart(cluster, node_id))
            changed = True
        if changed:
            _record_nodes(run, cluster)
        time.sleep(0.2)


def _restart(cluster: LocalCluster, node_id: str) -> tuple[bool, str]:
    proc = cluster.nodes.get(node_id)
    if proc is None:
        return False, f"{node_id} is not a node of this cluster (its nodes: {', '.join(cluster.nodes)})"
    if proc.alive():
        return True, f"{node_id} is running (pid {proc.pid}); nothing to restart"
    print(f"restarting {node_id} on {cluster.endpoint_of(node_id)}", flush=True)
    try:
        restarted = cluster.start_node(node_id)
    except ProcessError as exc:
        message = f"{node_id} did not start again: {str(exc).splitlines()[0]} (its log: {proc.log_path})"
        print(message, flush=True)
        return False, message
    message = (f"{node_id} is running again (pid {restarted.pid}) on {cluster.endpoint_of(node_id)}, "
               f"console {cluster.console_of(node_id)}/")
    print(message, flush=True)
    return True, message


def restart_node_command(args: argparse.Namespace) -> int:
    base = Path(args.dir)
    state = running(base)
    if state is None:
        return _refuse(f"no `make cluster` is running in {base}/ (give its --dir); `make cluster` starts every node")
    nodes = state.get("nodes") or {}
    if nodes and args.node not in nodes:
        return _refuse(f"{args.node} is not a node of the cluster in {base}/ (its nodes: {', '.join(nodes)})")
    done, message = ask_restart(base, args.node, args.timeout)
    if not done:
        return _refuse(message)
    print(message, flush=True)
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
    held = _hold_run_folder(args)
    if isinstance(held, str):
        return _refuse(held)
    base, settings, run = held
    try:
        for old in base.iterdir():   # an earlier drill's data and logs; not the lock this one holds
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            elif old.name not in ("cluster.lock", "cluster.json"):
                old.unlink(missing_ok=True)
        return _drill(args, settings)
    finally:
        run.release()


def _drill(args: argparse.Namespace, settings: ClusterSettings) -> int:
    base = Path(args.dir)
    settings.name = "drill"
    settings.node_ports = [0] * len(settings.node_ports)   # never collide with a running `make cluster`
    settings.console_ports = []
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


def redis_cluster_command(args: argparse.Namespace) -> int:
    if args.masters < 3 or not 0 <= args.replicas <= 5:
        return _refuse("--masters must be at least 3 (Redis Cluster elects by a majority of masters) and "
                       "--replicas from 0 to 5")
    base = Path(args.dir)
    run = RunDir(base)
    holder = run.acquire(kind="redis-cluster")
    if holder is not None:
        return _refuse(f"a `python -m devtools redis-cluster` already runs in {base}/ (pid {holder.get('pid', '?')}); "
                       "stop it first or give this one another --dir; nothing was started or deleted")
    try:
        left = leftovers(base)
        if left:
            return _refuse(f"servers of an earlier run in {base}/ still run without it: "
                           f"{', '.join(describe_process(pid, 40) for pid in left)}; stop them first "
                           f"(kill {' '.join(map(str, left))}); nothing was started or deleted")
        for old in base.glob("server-*"):   # a new cluster each run: its servers' node files name old ports
            shutil.rmtree(old, ignore_errors=True)
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        print(f"starting a Redis Cluster of {args.masters} masters with {args.replicas} replica(s) each in {base}/",
              flush=True)
        try:
            cluster = start_redis_cluster(base, args.masters, args.replicas)
        except ProcessError as exc:   # every server started is stopped again
            return _refuse(f"the Redis Cluster did not start: {exc}; logs in {base}/")
        with cluster:
            try:   # from its banner on, whose last line invites the Ctrl-C
                run.write_state(processes={f"redis-{m.port}": m.pid for m in cluster})
                _describe_redis_cluster(cluster)
                _watch_redis_cluster(cluster, stop)
            except KeyboardInterrupt:
                pass
            print("\nstopping the Redis Cluster", flush=True)
        return 0
    finally:
        run.release()


def _describe_redis_cluster(cluster: LocalRedisCluster) -> None:
    print(f"\nseeds: {','.join(cluster.seeds)}")
    for master in cluster.masters():
        ranges = ", ".join(f"{first}-{last}" for first, last in cluster.slots_of(master))
        replicas = ", ".join(f"{r.address} (pid {r.pid})" for r in cluster.replicas_of(master)) or "none"
        print(f"  master {master.address} (pid {master.pid}) slots {ranges}; replicas: {replicas}")
    first = cluster.members[0]
    print(f"""
logs, node files and AOFs: {cluster.base_dir}/server-N/
try:
  redis-cli -c -p {first.port} set hello world     # -c follows MOVED to the master of the key's slot
  redis-cli -p {first.port} cluster nodes
  kill -9 <pid of a master>                     # its replica is promoted in about 2 s
  redis-cli --cluster reshard {first.address} --cluster-from <node id> --cluster-to <node id> \\
      --cluster-slots 100 --cluster-yes
A node uses it with `redis_cluster: [seeds]` in its settings (`make cluster REDIS=cluster` runs the whole cluster so).
Ctrl-C stops everything.""", flush=True)


def _watch_redis_cluster(cluster: LocalRedisCluster, stop: dict[str, bool]) -> None:
    """Until Ctrl-C or SIGTERM: one line when a server ends (it is not restarted)."""
    reported: set[int] = set()
    while not stop["now"]:
        for member in cluster:
            proc = member.server.process
            if not proc.alive() and proc.pid not in reported:
                reported.add(proc.pid)
                print(f"{member.address} (pid {proc.pid}) {_ended(proc)}; its log: {proc.log_path}", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
