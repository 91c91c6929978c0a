"""Celery instrumentation: `traversion_celery_tasks_total` and the worker's own metrics port.

Task outcomes are counted from Celery's signals in the process that ran the task (a
prefork pool child). For those counts to reach Prometheus:

- on one machine (`make run`), every process shares PROMETHEUS_MULTIPROC_DIR, so the
  web `/metrics` already includes the workers' counters;
- a worker in its own container sets WORKER_METRICS_PORT (and its own
  PROMETHEUS_MULTIPROC_DIR): the worker's main process then serves the counters of all
  its pool children on that port, and Prometheus scrapes it as a separate target.
  Scrape-time gauges (queues, sessions, ...) are only served by the web `/metrics`, so
  nothing is counted twice.
"""

from __future__ import annotations

import logging
import os

from celery import signals

from . import buffered
from .catalogue import CELERY_TASKS

logger = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
RETRIED = "retried"


def task_name(sender) -> str:
    # A task object for success/failure/retry; a name string from some callers.
    return str(getattr(sender, "name", None) or sender or "unknown")


def on_task_success(sender=None, **kwargs) -> None:
    CELERY_TASKS.labels(task_name(sender), SUCCEEDED).inc()


def on_task_failure(sender=None, **kwargs) -> None:
    CELERY_TASKS.labels(task_name(sender), FAILED).inc()


def on_task_retry(sender=None, request=None, **kwargs) -> None:
    CELERY_TASKS.labels(task_name(sender), RETRIED).inc()


def on_worker_init(sender=None, **kwargs) -> None:
    """In the worker's main process, before the pool starts."""
    from django.conf import settings

    from .system import SERVER_PID_ENV

    # Pool children inherit it: system gauges served here describe the whole worker.
    os.environ[SERVER_PID_ENV] = str(os.getpid())
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    from prometheus_client import start_http_server

    from .exposition import process_registry

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        logger.warning(
            "WORKER_METRICS_PORT without PROMETHEUS_MULTIPROC_DIR: pool children's "
            "counters are not visible to the main process"
        )
    start_http_server(port, addr=settings.WORKER_METRICS_ADDRESS, registry=process_registry())
    logger.info("worker metrics on %s:%s/metrics", settings.WORKER_METRICS_ADDRESS, port)


def on_worker_process_shutdown(pid=None, **kwargs) -> None:
    """A pool child exits: its pending counts are written (it leaves with os._exit, which
    skips atexit), and its live gauges must stop counting (counters stay)."""
    buffered.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def connect() -> None:
    signals.task_success.connect(on_task_success, weak=False, dispatch_uid="metrics.success")
    signals.task_failure.connect(on_task_failure, weak=False, dispatch_uid="metrics.failure")
    signals.task_retry.connect(on_task_retry, weak=False, dispatch_uid="metrics.retry")
    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid="metrics.worker_init")
    signals.worker_process_shutdown.connect(
        on_worker_process_shutdown, weak=False, dispatch_uid="metrics.process_shutdown"
    )
