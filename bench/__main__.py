"""`python -m bench [--quick] [--scenario NAME ...]`: run the benchmarks, write the results.

Results go to bench/results/<full|quick>[-partial].json and .md (and profile-*.txt).
Every process is started on 127.0.0.1 on free ports in temporary folders and is
stopped by PID when the run ends, errors included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import env, report
from .context import Bench, Options
from .scenarios import SCENARIOS

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer levels, counts and runs (~2 min)")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(quick=args.quick, runs=args.runs or (1 if args.quick else 3))
    chosen = args.scenario or list(SCENARIOS)
    names = [name for name in SCENARIOS if name in chosen]
    mode = ("quick" if args.quick else "full") + ("" if len(names) == len(SCENARIOS) else "-partial")
    bench = Bench(options, args.results_dir)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"mode": mode, "started_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "machine": env.machine(), "versions": env.versions(), "source": env.source(),
                            "options": asdict(options), "scenarios": names}
    began = time.monotonic()
    failed = False
    try:
        for name in names:
            print(f"== {name}", flush=True)
            t0 = time.monotonic()
            try:
                bench.results[name] = SCENARIOS[name](bench)
            except Exception as exc:  # record it, go on with the other scenarios
                failed = True
                traceback.print_exc()
                bench.results[name] = {"error": f"{type(exc).__name__}: {exc}", "targets": []}
            bench.results[name]["elapsed_s"] = round(time.monotonic() - t0, 1)
    finally:
        bench.close()
    meta["duration_s"] = round(time.monotonic() - began, 1)
    json_path, md_path = report.write({"meta": meta, "scenarios": bench.results}, args.results_dir, mode)
    print(md_path.read_text())
    print(f"results: {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
