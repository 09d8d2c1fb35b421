"""What the scenarios share: the options, and the main cluster and Celery baseline,
each started on first use and stopped (by PID) when the run ends, even on errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .celery_side import CeleryBaseline
from .cluster import BenchCluster, BenchSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    quick: bool = False
    runs: int = 3                       # each figure is the median of this many runs
    workers: int = 2                    # worker processes (Celery: prefork processes)
    worker_concurrency: int = 32        # tasks in flight per worker process (ours)

    def pick(self, full: T, quick: T) -> T:
        """`full` normally, `quick` in a smoke run."""
        return quick if self.quick else full


@dataclass
class Bench:
    options: Options
    results_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    _cluster: BenchCluster | None = None
    _celery: CeleryBaseline | None = None

    def cluster(self) -> BenchCluster:
        """The main three-node cluster (throughput, latency, profile)."""
        if self._cluster is None:
            self._cluster = BenchCluster(self.cluster_settings("bench")).start()
        return self._cluster

    def celery(self) -> CeleryBaseline:
        if self._celery is None:
            self._celery = CeleryBaseline(processes=self.options.workers).start()
        return self._celery

    def cluster_settings(self, name: str, **more: Any) -> BenchSettings:
        return BenchSettings(name=name, workers=self.options.workers,
                             worker_concurrency=self.options.worker_concurrency, **more)

    def close(self) -> None:
        """Stop whatever was started; both are attempted even if one fails."""
        try:
            if self._celery is not None:
                self._celery.stop()
        finally:
            self._celery = None
            if self._cluster is not None:
                self._cluster.stop()
            self._cluster = None
