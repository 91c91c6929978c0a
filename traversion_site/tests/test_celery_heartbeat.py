"""The Celery app on the real Redis broker: a worker runs the heartbeat, readiness sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache

from traversion_site import health

BASE_DIR = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_worker_runs_heartbeat_from_redis(redis_url, tmp_path):
    cache.delete(health.HEARTBEAT_KEY)
    env = {**os.environ, "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url}
    queue = f"heartbeat-test-{os.getpid()}"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "traversion_site",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        from traversion_site.celery import app, heartbeat

        with app.connection_for_write(redis_url) as conn:
            heartbeat.apply_async(queue=queue, connection=conn)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and health.last_heartbeat() is None:
            time.sleep(0.2)
        assert health.last_heartbeat() is not None, "worker did not record a heartbeat"
        assert abs(time.time() - health.last_heartbeat()) < 30
    finally:
        worker.terminate()
        worker.communicate(timeout=30)


def test_beat_schedule_has_heartbeat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["heartbeat"]
    assert entry["task"] == "traversion.heartbeat"
    from traversion_site.celery import app

    assert "traversion.heartbeat" in app.tasks
