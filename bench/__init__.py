"""Benchmarks of the orchestrator on a real local cluster, side by side with Celery.

`make bench` (or `python -m bench`) runs every scenario and writes a JSON file and a
markdown table to `bench/results/`; see `bench/README.md` for what each figure means.
"""
