"""The Celery app: configuration from Django settings (CELERY_* names), tasks from apps."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traversion_site.settings")

app = Celery("traversion")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Notification delivery tasks live next to the transports, in each app's delivery.py.
app.autodiscover_tasks(related_name="delivery")


@worker_process_init.connect
def keep_worker_connections(**_) -> None:
    """A pool process keeps its database connection between tasks (one task at a time,
    one thread), for DATABASE_WORKER_CONN_MAX_AGE seconds; web processes do not."""
    from django.conf import settings
    from django.db import connections

    for alias in connections:
        connections[alias].settings_dict["CONN_MAX_AGE"] = settings.DATABASE_WORKER_CONN_MAX_AGE


@app.task(name="traversion.heartbeat", ignore_result=True)
def heartbeat() -> float:
    """Record that beat scheduled and a worker ran a task; /readyz reads it."""
    from traversion_site.health import record_heartbeat

    return record_heartbeat()
