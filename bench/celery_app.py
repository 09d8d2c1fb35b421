"""The Celery 5 baseline: one no-op task, chained three times (`chain_of_three`).

Broker and result backend are one redis-server of the benchmark's own (started on
a free port with the same AOF settings as the orchestrator's), named by the
environment variable BENCH_CELERY_REDIS_URL in the worker process:

    BENCH_CELERY_REDIS_URL=redis://127.0.0.1:PORT/0 \
        python -m celery -A bench.celery_app worker --pool prefork -c 2

`task_acks_late` is on, as a user who must not lose work would configure it.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, chain

URL_VARIABLE = "BENCH_CELERY_REDIS_URL"

app = Celery("bench")
app.conf.update(
    task_acks_late=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def configure(url: str) -> Celery:
    """Point the app at one Redis as broker and result backend."""
    app.conf.update(broker_url=url, result_backend=url)
    return app


if os.environ.get(URL_VARIABLE):
    configure(os.environ[URL_VARIABLE])


@app.task(name="bench.noop")
def noop(n: Any) -> Any:
    """Do nothing (the benchmark measures the framework, not the handler)."""
    return n


def chain_of_three(n: int) -> str:
    """Send one three-step chain; returns the id of its last task (set when the chain ends)."""
    return str(chain(noop.si(n), noop.si(n), noop.si(n)).apply_async().id)
