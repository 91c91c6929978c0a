"""A real Celery worker on Redis runs the causality engine for an ingested batch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from events.choices import PROCESS_BATCH_TASK
from events.ingest import ingest
from events.models import CausalityBatch, CausalLink, Event

from .conftest import event, scripted_incident

BASE_DIR = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_database_url(settings) -> str:
    """The URL of the test database pytest-django created (the worker must use it)."""
    from conftest import require_postgresql

    require_postgresql("the worker shares the test database with a subprocess")
    database = settings.DATABASES["default"]
    base = urlparse(os.environ["DATABASE_URL"])
    return base._replace(path="/" + database["NAME"]).geturl()


test_database_url.__test__ = False  # a helper, not a test


@pytest.mark.django_db(transaction=True)
def test_worker_processes_a_batch_sent_on_commit(redis_url, tenant_a, tenant_b, settings, t0):
    queue = f"events-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "DATABASE_URL": test_database_url(settings),
        "DATABASE_CONN_MAX_AGE": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
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
    output = ""
    try:
        from traversion_site.celery import app

        with app.connection_for_write(redis_url) as conn:
            sent = []

            def enqueue(batch_id: int) -> None:
                # The production enqueue with the test's broker connection and queue.
                app.send_task(PROCESS_BATCH_TASK, args=[batch_id], queue=queue, connection=conn)
                sent.append(batch_id)

            # Autocommit: ingest's transaction commits, then its on_commit hook sends.
            alpha = ingest(tenant_a, scripted_incident(t0), enqueue=enqueue)
            beta = ingest(
                tenant_b,
                [event("checkout", "deploy", t0), event("checkout", "error", t0)],
                enqueue=enqueue,
            )
            assert sent == [alpha.batch_id, beta.batch_id]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and CausalityBatch.objects.exists():
            if worker.poll() is not None:
                break
            time.sleep(0.2)
        assert not CausalityBatch.objects.exists(), "the worker did not process the batches"
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]

    assert "Traceback" not in output, output
    events = Event.objects.in_bulk(alpha.ids)
    deploy = next(e for e in events.values() if e.event_type == "deploy")
    errors = [e for e in events.values() if e.event_type == "error" and e.service_id == "checkout"]
    for error in errors:
        assert CausalLink.objects.filter(cause=deploy, effect=error).exists()
    assert CausalLink.objects.filter(tenant=tenant_b).count() == 1
    assert not CausalLink.objects.filter(tenant=tenant_a).exclude(cause_id__in=alpha.ids).exists()
