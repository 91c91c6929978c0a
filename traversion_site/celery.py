"""The Celery app: configuration from Django settings (CELERY_* names), tasks from apps."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traversion_site.settings")

app = Celery("traversion")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Notification delivery tasks live next to the transports, in each app's delivery.py.
app.autodiscover_tasks(related_name="delivery")


@app.task(name="traversion.heartbeat", ignore_result=True)
def heartbeat() -> float:
    """Record that beat scheduled and a worker ran a task; /readyz reads it."""
    from traversion_site.health import record_heartbeat

    return record_heartbeat()
