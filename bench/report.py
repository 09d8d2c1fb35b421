"""Writing the results: the full JSON, and a markdown summary of the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def write(results: dict[str, Any], directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}" if isinstance(value, float) or digits else f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    m, v = meta["machine"], meta["versions"]
    lines = [f"# Benchmark results ({meta['mode']}), {meta['started_at']}", "",
             f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}; "
             f"load average at start {m['load_average_at_start']}.  ",
             f"Versions: Python {v['python']}, redis-server {v['redis_server']}, etcd {v['etcd']}, "
             f"grpcio {v['grpcio']}, redis-py {v['redis_py']} (hiredis {v.get('hiredis')}), "
             f"uvloop {v.get('uvloop')}, protobuf {v['protobuf']}, "
             f"Celery {v['celery']} (kombu {v['kombu']}), py-spy {v['py_spy']}.  ",
             f"Source: commit {meta['source']['commit']}"
             + (" with local changes in orchestrator/ or worker/" if meta["source"]["orchestrator_or_worker_modified"]
                else "") + ".  ",
             f"Settings: {json.dumps(meta['options'])}; scenarios {', '.join(meta['scenarios'])}; "
             f"took {meta['duration_s']:.0f} s.", ""]
    scenarios = results["scenarios"]
    targets = [(name, t) for name, s in scenarios.items() for t in s.get("targets", [])]
    if targets:
        lines += ["## Targets", ""]
        lines += _table(["scenario", "target", "measured", "goal", "verdict", "note"],
                        [[name, t["name"], _f(t["value"], 2), t["target"], f"**{t['verdict']}**", t["note"]]
                         for name, t in targets])
    for name, renderer in (("throughput", _throughput), ("cluster", _cluster), ("latency", _latency),
                           ("conductor", _conductor),
                           ("events", _events),
                           ("failover", _failover), ("durability", _durability),
                           ("scale", _scale), ("size", _size), ("profile", _profile)):
        if name in scenarios:
            lines += renderer(scenarios[name])
    errors = {k: s["error"] for k, s in scenarios.items() if "error" in s}
    if errors:
        lines += ["## Errors", ""] + [f"- {k}: `{e}`" for k, e in errors.items()] + [""]
    return "\n".join(lines)


def _throughput(s: dict[str, Any]) -> list[str]:
    if "summary" not in s:
        return []
    by = s["summary"]["by_level"]
    rows = []
    for level in s["settings"]["levels"]:
        o, c = by["ours"][level] if level in by["ours"] else by["ours"][str(level)], \
            by["celery"][level] if level in by["celery"] else by["celery"][str(level)]
        ratio = s["summary"]["ratio_by_level"].get(level, s["summary"]["ratio_by_level"].get(str(level)))
        rows.append([level, _f(o["workflows_per_s"]), _f(o["tasks_per_s"], 0),
                     f"{_f(o['latency_p50_ms'], 0)} / {_f(o['latency_p99_ms'], 0)}",
                     _f(c["workflows_per_s"]), _f(c["tasks_per_s"], 0),
                     f"{_f(c['latency_p50_ms'], 0)} / {_f(c['latency_p99_ms'], 0)}", _f(ratio, 2),
                     f"{_f(o['cpu_ms_per_workflow'], 2)} / {_f(c['cpu_ms_per_workflow'], 2)}",
                     f"{_f(o['client_cpu_ms_per_workflow'], 2)} / {_f(c['client_cpu_ms_per_workflow'], 2)}",
                     f"{_f(o['machine_cpu_percent'], 0)} / {_f(c['machine_cpu_percent'], 0)}",
                     f"{_f(o['outside_cpu_percent'], 0)} / {_f(c['outside_cpu_percent'], 0)}"])
    peak = s["summary"]["peak"]
    return ["## Throughput: three no-op steps, closed loop (medians of runs)", "",
            f"{s['settings']['mode']}: N client threads each start a workflow and wait for its completion. "
            f"Ours: {s['settings']['ours_workers']}, starts {s['settings']['starts']}. "
            f"Celery: {s['settings']['celery_workers']}. Both run side by side, runs alternating.", ""] + _table(
        ["in flight", "ours wf/s", "ours tasks/s", "ours p50 / p99 ms", "Celery chains/s", "Celery tasks/s",
         "Celery p50 / p99 ms", "ours / Celery", "CPU ms per workflow ours / Celery",
         "load generator CPU ms per workflow ours / Celery", "machine CPU % ours / Celery",
         "CPU % outside ours / Celery"],
        rows) + [f"Closed-loop peak: ours {_f(peak['ours'])} workflows/s, Celery {_f(peak['celery'])} chains/s, "
                 f"ratio {_f(peak['ratio'], 2)}. Node RSS max during the runs (MB): {s.get('node_rss_mb_max')}.",
                 "", "CPU ms per workflow: CPU time of the system's own processes (ours: nodes, workers, Redis, etcd; "
                 "Celery: worker main + pool processes, its Redis) per completed workflow. Machine CPU is out of "
                 "200 %; 'outside' is CPU used by neither system nor the load generator (other tenants of the "
                 "machine, kernel networking, the idle other system).", ""] + _commands(s)


def _commands(s: dict[str, Any]) -> list[str]:
    per = s["summary"].get("redis_commands_per_workflow_at_top_level", {})
    cpu = s.get("cpu_percent_by_process_at_top_level", {})
    lines = []
    for system in per:
        top = ", ".join(f"{name} {calls:g}" for name, calls in list(per[system].items())[:12])
        lines.append(f"- {system}: Redis commands per workflow (first run at the top level; commands run inside "
                     f"Lua scripts included): {top}")
        lines.append(f"- {system}: CPU % by process (first run at the top level): {cpu.get(system)}")
    return lines + [""] if lines else []


def _cluster(s: dict[str, Any]) -> list[str]:
    if "summary" not in s:
        return []
    sm = s["summary"]
    rows = []
    for level in s["settings"]["levels"]:
        for layout in ("single", "cluster"):
            by = sm["by_level"][layout]
            f = by[level] if level in by else by[str(level)]
            per_server = ", ".join(f"{name.removeprefix('redis-')} {_f(ms, 3)}"
                                   for name, ms in f["redis_cpu_ms_per_workflow"].items())
            rows.append([level, layout, _f(f["workflows_per_s"]),
                         f"{_f(f['latency_p50_ms'], 1)} / {_f(f['latency_p99_ms'], 1)}",
                         _gross_net(f, "masters"), _gross_net(f, "replicas"),
                         per_server, _f(f["engine_commands_per_workflow"]), _f(f["watcher_commands_per_workflow"], 2),
                         _f(f["nodes_and_workers_cpu_ms_per_workflow"], 2), _f(f["cpu_ms_per_workflow"], 2),
                         _f(f["outside_cpu_percent"], 0)])
    peak, one = sm["peak"], sm["one_at_a_time"]
    lines = ["## Cluster: the state on a Redis Cluster vs one Redis, side by side (medians of runs)", "",
             f"{s['settings']['layouts']['cluster']} vs {s['settings']['layouts']['single']}; "
             f"{s['settings']['shape']}; `{s['settings']['workflow']}`, {s['settings']['mode']}, runs alternating.",
             ""] + _table(
        ["in flight", "layout", "wf/s", "p50 / p99 ms", "Redis CPU ms per workflow, masters (less idle)",
         "replicas (less idle)", "per server", "Redis commands per workflow (masters)",
         "the bench's XREADs per workflow", "nodes + workers CPU ms per workflow", "CPU ms per workflow, all",
         "CPU % outside"], rows)
    lines += [f"Peak (closed loop, the best level): Redis Cluster {_f(peak['cluster'])} wf/s vs single Redis "
              f"{_f(peak['single'])} wf/s, {_f(peak['ratio'], 3)} x (run by run: "
              f"{', '.join(_f(r, 3) for r in peak.get('ratio_run_by_run', [])) or 'not recorded'}). One at a time: "
              f"{_f(one['cluster']['workflows_per_s'])} vs {_f(one['single']['workflows_per_s'])} wf/s "
              f"({_f(one['ratio'], 3)} x), p50 {_f(one['cluster']['latency_p50_ms'], 2)} vs "
              f"{_f(one['single']['latency_p50_ms'], 2)} ms. Redis CPU: each redis-server's CPU over the run / "
              "the workflows it completed (warm-up included); in brackets, less what the server used idle "
              f"({s['settings'].get('idle_s')} s with nothing in flight before each round of runs). Commands: INFO "
              "commandstats summed over the masters, commands inside scripts included, the bench's own XREADs of "
              "the `ended` streams apart.", ""]
    return lines + _capacity(sm.get("capacity", {}), s["settings"].get("capacity_assumptions", ""))


def _gross_net(figures: dict[str, Any], who: str) -> str:
    """CPU ms per workflow, and in brackets less what the servers used idle."""
    return (f"{_f(figures[f'{who}_cpu_ms_per_workflow'], 3)} "
            f"({_f(figures[f'{who}_marginal_cpu_ms_per_workflow'], 3)})")


def _capacity(c: dict[str, Any], assumptions: str) -> list[str]:
    """The capacity model's table (bench/capacity.py), labelled a model."""
    if "rates" not in c:
        return [f"Capacity model: {c.get('error', 'not computed')}.", ""]
    rows = [[f"{r['workflows_per_s']:,}", r["masters_even_spread"],
             r["masters"] if r["masters"] is not None
             else f"none: needs >= {r['partitions_needed']} partitions and as many masters",
             _f(c["nodes_and_workers_cores"].get(str(r["workflows_per_s"])), 1)] for r in c["rates"]]
    return ["### Capacity: a model, not a measurement", "",
            f"Redis Cluster masters' CPU per workflow less idle {_f(c['redis_cpu_ms_per_workflow'], 3)} ms "
            f"({_f(c.get('masters_cpu_ms_per_workflow_with_idle'), 3)} with idle; replicas "
            f"{_f(c['replicas_cpu_ms_per_workflow'], 3)} ms more), so {c['workflows_per_s_per_core']:,} workflows/s "
            f"per Redis core, {c['workflows_per_s_per_master']:,} per master at {c['core_share']:.0%} of a core "
            f"(single Redis: {_f(c['single_redis_cpu_ms_per_workflow'], 3)} ms, "
            f"{_f(c['single_redis_workflows_per_s_per_core'], 0)} per core). Assumptions: {assumptions}; "
            f"{c['partitions']} partitions, which allow {c['ceiling_workflows_per_s']:,} workflows/s at most (one "
            "partition per master).", ""] + _table(
        ["workflows/s", "masters (even spread)", f"masters with {c['partitions']} partitions",
         "node + worker cores (at this run's CPU per workflow)"], rows)


def _latency(s: dict[str, Any]) -> list[str]:
    lines = ["## Dispatch latency (task ready -> handler running, ms; medians of runs)", ""]
    lines += _open_loop_peak(s.get("open_loop_peak"))
    rows = []
    for load, d in s.get("dispatch", {}).items():
        held = d.get("held_runs", len(d["runs"]))
        med = d["median"] if held else d.get("median_all_runs", d["median"])
        starts = [r.get("starts_per_s", float("nan")) for r in d["runs"]]
        completions = [r.get("achieved_workflows_per_s", float("nan")) for r in d["runs"]]
        drains = [r.get("drain_s", float("nan")) for r in d["runs"]]
        rows.append([load, f"{d['rate_workflows_per_s']:g} wf/s ({3 * d['rate_workflows_per_s']:g} tasks/s)",
                     f"{held} of {len(d['runs'])}" + ("" if held else " (**NOT HELD**: figures of an overload)"),
                     _f(min(starts)) + " - " + _f(max(starts)), _f(min(completions)) + " - " + _f(max(completions)),
                     _f(max(drains), 2),
                     " / ".join(_f(med["dispatch_ms"][q], 2) for q in ("p50", "p95", "p99")),
                     " / ".join(_f(med["claim_ms"][q], 2) for q in ("p50", "p95", "p99")),
                     " / ".join(_f(med["push_ms"][q], 2) for q in ("p50", "p95", "p99"))])
    lines += _table(["load", "offered rate", "runs that held it", "starts/s achieved", "completions/s achieved",
                     "drain after the last start, s (max)", "dispatch p50/p95/p99", "claim (ready -> claimed)",
                     "push (claimed -> handler)"], rows)
    lines += ["Open loop of three-step `bench_stamp` workflows. Dispatch = handler entry (worker clock) - "
              "scheduled_at_ms; claim = started_at_ms - scheduled_at_ms; push = handler entry - started_at_ms. "
              "The stored times are whole ms. A run held its rate when its starts (as the calls returned) and its "
              "completions (by their end times), each paced over the middle 96 % of them, both reached 98 % of "
              "the offered rate and every start completed; the figures are the medians of the runs that held it "
              "(of all runs, marked, when none did).", ""]
    e2e = s.get("start_to_complete", {}).get("median")
    calls = s.get("settings", {}).get("start_to_complete_calls", {})
    if e2e:
        lines += ["## Start-to-complete latency, one no-op step, one at a time (ms; medians of runs)", ""]
        rows = [[f"client: {calls.get(way, way)}", _f(e2e[way]["client_ms"]["p50"], 2),
                 _f(e2e[way]["client_ms"]["p99"], 2)] for way in e2e]
        rows += [[f"server (ended_at_ms - created_at_ms), the {way} ones", _f(e2e[way]["server_ms"]["p50"], 2),
                  _f(e2e[way]["server_ms"]["p99"], 2)] for way in e2e]
        lines += _table(["measured as", "p50", "p99"], rows)
        lines += ["The two ways take turns workflow by workflow. The target's figure is the ExecuteWorkflow call's: "
                  "what a client that waits for a workflow sees.", ""]
    return lines


def _open_loop_peak(peak: dict[str, Any] | None) -> list[str]:
    if not peak:
        return []
    found = peak["open_loop_peak_per_s"]
    text = "not found (no step held)" if found is None else \
        f"{'at least ' if peak['peak_is_a_lower_bound'] else ''}{_f(found)} wf/s"
    rows = [[_f(st["offered_per_s"]), _f(st["started_per_s"]), _f(st["completed_per_s"]),
             "held" if st["held"] else "**not held**"] for st in peak["steps"]]
    return [f"Open loop's peak (the knee of a ramp of short open-loop steps, in the order run): {text}; "
            f"the closed loop's peak it started from: {_f(peak['closed_loop_peak_per_s'])} wf/s.", ""] + _table(
        ["offered wf/s", "started/s", "completed/s", "verdict"], rows)


def _conductor(s: dict[str, Any]) -> list[str]:
    lines = ["## Conductor's Python SDK through the REST API (medians of runs)", ""]
    throughput = s.get("throughput", {})
    rows = [["throughput, 64 workflows of 5 tasks in flight", f"{_f(throughput.get('median_tasks_per_s'))} tasks/s",
             ", ".join(_f(r["tasks_per_s"]) for r in throughput.get("runs", []))]]
    for name, d in s.get("dispatch", {}).items():
        rows.append([f"dispatch p50 / p99, {name}", f"{_f(d['median']['p50'], 2)} / {_f(d['median']['p99'], 2)} ms",
                     ", ".join(f"{_f(r['dispatch_ms']['p50'], 2)} / {_f(r['dispatch_ms']['p99'], 2)}"
                               for r in d["runs"])])
    lines += _table(["figure", "median", "runs"], rows)
    lines += ["conductor-python's TaskHandler, unchanged (bench/conductor_worker.py), one worker program per node; "
              "dispatch = the handler's first statement - scheduled_at_ms, at 10 workflows/s (50 tasks/s).", ""]
    return lines


def _events(s: dict[str, Any]) -> list[str]:
    lines = ["## The event bus (medians of runs)", ""]
    handled, latency, cpu = s.get("handled", {}), s.get("latency", {}), s.get("cpu", {})
    rows = [["events handled per second (start_workflow action)", _f(handled.get("median_per_s")),
             ", ".join(_f(r["handled_per_s"]) for r in handled.get("runs", []))],
            ["publish -> first task running, p50 / p99 ms",
             f"{_f(latency.get('median_p50_ms'), 2)} / {_f(latency.get('median_p99_ms'), 2)}",
             ", ".join(f"{_f(r['publish_to_first_task_ms']['p50'], 2)} / {_f(r['publish_to_first_task_ms']['p99'], 2)}"
                       for r in latency.get("runs", []))],
            ["CPU ms per workflow: StartWorkflow vs event", "",
             ", ".join(f"{_f(r['api']['cpu_ms_per_workflow'], 2)} vs {_f(r['events']['cpu_ms_per_workflow'], 2)} "
                       f"(+{_f(100 * r['overhead'])} %)" for r in cpu.get("runs", []))]]
    lines += _table(["figure", "median", "runs"], rows)
    lines += ["Handled: a burst appended to the topic's stream, handled into `bench_parked` workflows (created, "
              "task queued); publish -> first task: API publishes at 20/s, one-step `bench_stamp` workflows; "
              "CPU: one-step no-op workflows at 60/s each way, nodes + workers + Redis + etcd.", ""]
    return lines


def _durability(s: dict[str, Any]) -> list[str]:
    if "summary" not in s:
        return []
    sm = s["summary"]
    peak, one, rounds, cpu = sm["peak"], sm["one_at_a_time"], sm["wait_rounds_per_workflow"], \
        sm["cpu_ms_per_workflow_at_peak"]
    rows = [[mode, _f(peak[mode]), f"{_f(one[mode]['p50_ms'], 2)} / {_f(one[mode]['p99_ms'], 2)}",
             _f(one[mode]["workflows_per_s"]), f"{_f(rounds[mode]['64'], 2)} / {_f(rounds[mode]['1'], 2)}",
             _f(cpu[mode], 2)]
            for mode in ("N=0", "N=1")]
    return ["## Durability: acknowledging once a replica holds it (medians of runs)", "",
            f"{s['settings']['shape']}; `redis_min_replicas` 0 vs 1, runs alternating.", ""] + _table(
        ["mode", "peak wf/s (64 in flight)", "one at a time p50 / p99 ms", "one at a time wf/s",
         "WAIT rounds per workflow (64 / 1 in flight)", "CPU ms per workflow at peak"], rows) + [
        f"N=1 vs N=0: peak x {_f(peak['ratio'], 3)} (cost {_f(100 * peak['cost'])} %), "
        f"+{_f(one['added_p50_ms'], 2)} ms p50 per workflow one at a time.", ""]


def _failover(s: dict[str, Any]) -> list[str]:
    if "by_signal" not in s:
        return []
    rows, profile_rows = [], []
    for sig, d in s["by_signal"].items():
        if not d.get("count"):
            continue
        f = d["failover_ms"]
        rows.append([sig, d["count"], _f(f["p50"], 0), _f(f["p99"], 0), _f(f["max"], 0),
                     _f(d["longest_gap_ms"]["p50"], 0), _f(d["longest_gap_ms"]["max"], 0), _f(d["baseline_per_s"])])
        profile_rows.append([sig] + [_f(x, 0) for x in d["mean_per_s_by_bucket"]])
    a = s["audit"]
    starts = s["by_signal"]["SIGKILL"].get("bucket_starts_ms") or s["by_signal"]["SIGTERM"].get("bucket_starts_ms", [])
    return ["## Failover under steady load", "",
            f"{s['settings']['rate_workflows_per_s']:g} three_noops workflows/s; "
            f"lease TTL {s['settings']['lease_ttl_s']} s. "
            "Failover = signal -> the new leader's first decision. Gap = longest time without any workflow "
            "completing, from 1 s before to 5 s after the signal.", ""] + _table(
        ["signal", "times", "failover p50 ms", "p99 ms", "max ms", "gap p50 ms", "gap max ms",
         "completions/s before"], rows) + [
        "Completions/s per 250 ms bucket around the signal (mean over the signals; columns = bucket start, ms):", ""
    ] + _table(["signal"] + [str(x) for x in starts], profile_rows) + [
        f"Audit: {a['started']} started, {a['completed']} completed, {a['lost']} lost, "
        f"{a['completed_twice']} completed twice, {a['repeated_attempts']} task attempts run more than once "
        f"({a['repeat_reasons']}).", ""]


def _size(s: dict[str, Any]) -> list[str]:
    rows = [[key.rpartition("_")[0], f"{f['steps']:,}", _f(f["ms_per_step"], 2), _f(f["cpu_ms_per_step"], 2)]
            for key, f in s.items() if isinstance(f, dict) and "ms_per_step" in f]
    if not rows:
        return []
    return ["## Size: the cost of a step against the size of its workflow (one at a time)", ""] + _table(
        ["shape", "steps", "ms per step (median of runs)", "CPU ms per step, nodes + workers + Redis + etcd"],
        rows) + [
        "Ratios, large / small: " + ", ".join(f"{shape} {s[shape + '_ratio']} x"
                                               for shape in ("sequence", "loop", "fork")
                                               if f"{shape}_ratio" in s) + ".", ""]


def _scale(s: dict[str, Any]) -> list[str]:
    if "tiers" not in s:
        return []
    rows = [[f"{t['in_flight']:,}", _f(t["starts_per_s"], 0), f"{t['bytes_per_workflow']:,}",
             f"{t['marginal_bytes_per_workflow']:,}", f"{t['dataset_bytes_per_workflow']:,}",
             _f(t["three_noops_per_s"]), _f(t["three_noops_p99_ms"], 0),
             _f(max(t["rss_mb_while_starting"].values()), 0), _f(max(t["rss_mb_under_load"].values()), 0)]
            for t in s["tiers"]]
    b = s.get("memory_breakdown_bytes", {})
    return ["## Scale: workflows in flight (parked on a task type with no worker)", ""] + _table(
        ["in flight", "starts/s", "used_memory / workflow (B)", "marginal, since the previous tier (B)",
         "used_memory_dataset / workflow (B)", "three_noops wf/s at that level", "its p99 ms",
         "node RSS max while starting MB", "node RSS max under load MB"], rows) + [
        f"Node RSS at idle (MB): {s['idle_rss_mb']}. One parked workflow's hash: {b.get('workflow_hash_avg')} B "
        f"(MEMORY USAGE), its idempotency key {b.get('idempotency_key_avg')} B; hash fields (value bytes): "
        f"{b.get('hash_field_bytes')}.", ""]


def _profile(s: dict[str, Any]) -> list[str]:
    if "profiles" not in s:
        return ["## Profile", "", s.get("skipped", ""), ""]
    lines = ["## Profile of the hot path (py-spy, samples holding the GIL)", "",
             f"{s['duration_s']} s at {s['concurrency']} in flight "
             f"({s['workflows_per_s_while_profiling']} wf/s while profiled).", ""]
    for role, p in s["profiles"].items():
        lines += [f"{role} ({p['node']}), {p['samples']} samples, full list in `{p['file']}`; top by self time:", ""]
        lines += _table(["% self", "function"], [[_f(pct, 1), f"`{name}`"] for name, pct in p["top_self"][:12]])
    return lines
