"""A real Celery worker on Redis for integration tests, and the test process's own app.

- `celery_on_redis`: while a test runs, the current Celery app publishes to the test's
  Redis (`redis_url`) instead of the configured broker, so `dispatch.notify` and the
  recovery enqueue there; the queue is purged before and after.
- `celery_worker`: `celery_worker(**env)` starts `celery -A traversion_site worker` as a
  subprocess (solo pool: the task runs in the process a test may SIGKILL) on that Redis
  and on the pytest test database (the test must use `transactional_db`, so the worker
  sees committed rows). Every worker started is stopped after the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from conftest import require_postgresql

QUEUE = "celery"
REPO = Path(__file__).resolve().parents[2]


def _purge(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        # The default queue, and the messages a killed worker left unacknowledged (they
        # would be redelivered an hour later into whatever uses this Redis database).
        client.delete(QUEUE, "unacked", "unacked_index")
    finally:
        client.close()


@pytest.fixture
def celery_on_redis(redis_url):
    from celery import Celery
    from celery._state import get_current_app

    previous = get_current_app()
    app = Celery("traversion-tests", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = redis_url
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    _purge(redis_url)
    app.set_current()
    try:
        yield app
    finally:
        previous.set_current()
        app.close()
        _purge(redis_url)


def database_url() -> str:

    db = settings.DATABASES["default"]
    require_postgresql("the worker tests share the PostgreSQL test database with a subprocess")
    auth = db.get("USER") or "postgres"
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return (
        f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    )


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"worker did not start:\n{self.output()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acknowledgement, exactly like an OOM kill."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def celery_worker(celery_on_redis, redis_url, tmp_path, transactional_db):
    workers: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        name = f"w{len(workers)}-{uuid.uuid4().hex[:6]}"
        var_dir = tmp_path / name
        var_dir.mkdir()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "traversion_site.settings",
            "DATABASE_URL": database_url(),
            "DATABASE_CONN_MAX_AGE": "0",
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "TRAVERSION_VAR_DIR": str(var_dir),
            "SECRET_KEY": settings.SECRET_KEY,
            "PUBLIC_URL": settings.PUBLIC_URL,
            "ALERT_GROUP_WAIT": str(settings.ALERT_GROUP_WAIT),
            **{k: str(v) for k, v in extra_env.items()},
        }
        log = var_dir / "worker.log"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "traversion_site",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-Q",
                QUEUE,
                "-n",
                f"{name}@%h",
            ],
            cwd=REPO,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        worker = Worker(process, log)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
