"""The Celery app: configuration from Django settings (CELERY_* names), tasks from apps."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traversion_site.settings")

app = Celery("traversion")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Notification delivery tasks live next to the transports, in each app's delivery.py.
app.autodiscover_tasks(related_name="delivery")


# Celery's Django fix-up closes every database connection before and after each task
# unless CELERY_DB_REUSE_MAX is set. Worker processes keep theirs instead (a connection
# costs about 1 ms and a round of set-up queries), and before each task follow Django's
# own rule for requests: a connection older than DATABASE_WORKER_CONN_MAX_AGE, or one
# that failed and no longer answers, is closed and reopened on first use.
app.conf.CELERY_DB_REUSE_MAX = 1_000_000


@task_prerun.connect
def recycle_worker_connections(task=None, **_) -> None:
    if getattr(getattr(task, "request", None), "is_eager", False):
        return  # run in the caller's thread (and maybe its transaction): not a worker's
    from django.conf import settings
    from django.db import close_old_connections, connections

    for alias in connections:
        connections[alias].settings_dict["CONN_MAX_AGE"] = settings.DATABASE_WORKER_CONN_MAX_AGE
    close_old_connections()


@app.task(name="traversion.heartbeat", ignore_result=True)
def heartbeat() -> float:
    """Record that beat scheduled and a worker ran a task; /readyz reads it."""
    from traversion_site.health import record_heartbeat

    return record_heartbeat()
