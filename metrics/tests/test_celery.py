"""Celery: task outcomes counted in the worker, queue lengths read from the broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
import redis
from celery import Celery
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from bench._support import BASE_DIR, app_env, free_port, get
from metrics.queues import filesystem_lengths, known_queues, redis_lengths

from .helpers import parse, sample_sums

TASKS = "traversion_celery_tasks_total"


def tasks_seen(families) -> dict[tuple[str, str], float]:
    family = families.get(TASKS)
    if family is None:
        return {}
    return {
        (s.labels["task"], s.labels["state"]): s.value
        for s in family.samples
        if s.name == TASKS and s.labels["task"].startswith("metrics_test.")
    }


@pytest.mark.integration
def test_worker_counts_task_outcomes_across_pool_processes(tmp_path, redis_url):
    queue = f"metrics-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = app_env(
        CELERY_BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        WORKER_METRICS_PORT=str(port),
        WORKER_METRICS_ADDRESS="127.0.0.1",
        DATABASE_URL=os.environ.get("DATABASE_URL", ""),
    )
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "traversion_site", "worker",
            "--pool", "prefork", "--concurrency", "2", "--queues", queue,
            "--include", "metrics.tests.celery_tasks", "--loglevel", "WARNING",
            "--without-heartbeat", "--without-gossip", "--without-mingle",
        ],
        cwd=BASE_DIR,
        env=env,
    )  # fmt: skip
    sender = Celery("metrics-test", broker=redis_url)
    try:
        for name in ("metrics_test.succeed", "metrics_test.fail", "metrics_test.retry_once"):
            sender.send_task(name, queue=queue)
        expected = {
            ("metrics_test.succeed", "succeeded"): 1,
            ("metrics_test.fail", "failed"): 1,
            ("metrics_test.retry_once", "retried"): 1,
            ("metrics_test.retry_once", "succeeded"): 1,
        }
        seen: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                status, body = get(port, "/metrics")
            except OSError:  # the worker is still starting
                status = 0
            if status == 200:
                seen = tasks_seen(parse(body.decode()))
                if seen == expected:
                    break
            time.sleep(0.25)
        # Served by the worker's own port (its pool children's files, merged)...
        assert seen == expected
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        sender.close()
    # ...and readable by the web /metrics of the same machine, through the shared directory.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    shared = {}
    for family in registry.collect():
        if family.name == "traversion_celery_tasks":
            shared = tasks_seen({TASKS: family})
    assert shared == expected


def test_queue_lengths_from_redis(redis_url):
    queue = f"metrics-test-{uuid.uuid4().hex[:8]}"
    sender = Celery("metrics-test", broker=redis_url)
    try:
        for _ in range(3):
            sender.send_task("metrics_test.succeed", queue=queue)
        sender.send_task("metrics_test.succeed", queue=queue, priority=5)
        assert redis_lengths(redis_url, [queue, "metrics-test-empty"], {}) == {
            queue: 4,
            "metrics-test-empty": 0,
        }
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{queue}*"):
            client.delete(key)
        client.close()
        sender.close()


def test_queue_lengths_from_the_filesystem_broker(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    sender = Celery("metrics-test", broker="filesystem://")
    sender.conf.broker_transport_options = options
    try:
        sender.send_task("metrics_test.succeed", queue="alpha.q")
        sender.send_task("metrics_test.succeed", queue="alpha.q")
        sender.send_task("metrics_test.succeed", queue="beta")
    finally:
        sender.close()
    assert filesystem_lengths(["alpha.q", "beta", "gamma"], options) == {
        "alpha.q": 2,
        "beta": 1,
        "gamma": 0,
    }


def test_known_queues_include_routes_and_declared_queues():
    from kombu import Queue

    app = Celery("metrics-test")
    app.conf.task_queues = [Queue("declared")]
    app.conf.task_routes = {"a.task": {"queue": "routed"}}
    assert known_queues(app) == ["celery", "declared", "routed"]


@pytest.mark.django_db
def test_queue_gauge_reads_the_configured_broker(client):
    body = client.get("/metrics").content.decode()
    family = parse(body)["traversion_celery_queue_length"]
    assert sample_sums(family, "traversion_celery_queue_length", queue="celery") >= 0
    assert {s.labels["queue"] for s in family.samples} >= {"celery"}
