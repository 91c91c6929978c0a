"""System gauges, computed at scrape time: memory, CPU, uptime, dependencies.

Memory, CPU and uptime describe the *server*, not the one worker that happens to answer
the scrape: under gunicorn they cover the master and all its workers (the master's pid
is published as TRAVERSION_SERVER_PID by traversion_site/gunicorn.conf.py; a Celery
worker publishes its own). Run any other way, they cover the current process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from urllib.parse import urlparse

import psutil
from django.conf import settings
from django.db import connections

from .collectors import scrape_gauge

logger = logging.getLogger(__name__)

#: Environment variable naming the root process of the server (gunicorn master).
SERVER_PID_ENV = "TRAVERSION_SERVER_PID"
#: Seconds a dependency check may take; a scrape must stay fast when one is down.
DEPENDENCY_TIMEOUT_SECONDS = 1.0


def server_processes() -> list[psutil.Process]:
    """The server's root process and all its descendants (alive now)."""
    raw = os.environ.get(SERVER_PID_ENV, "")
    try:
        root = psutil.Process(int(raw)) if raw.isdigit() else psutil.Process()
        return [root, *root.children(recursive=True)]
    except psutil.Error:  # the master went away: report what we can see
        return [psutil.Process()]


def memory_by_type(processes: list[psutil.Process]) -> dict[str, int]:
    totals = {"rss": 0, "vms": 0, "shared": 0, "heap": 0}
    for process in processes:
        try:
            info = process.memory_info()
        except psutil.Error:  # exited between listing and reading
            continue
        shared = getattr(info, "shared", 0)
        totals["rss"] += info.rss
        totals["vms"] += info.vms
        totals["shared"] += shared
        # Resident anonymous memory: Python objects, malloc heap, arenas, stacks.
        totals["heap"] += max(info.rss - shared, 0)
    return totals


@scrape_gauge(
    "traversion_memory_usage_bytes",
    "Memory of the server process tree by type: rss, vms, shared, heap (resident anonymous).",
    ["type"],
    cached=False,
)
def memory_usage():
    return [((kind,), value) for kind, value in memory_by_type(server_processes()).items()]


class CpuMeter:
    """CPU use of the server tree between two scrapes, as a percent of the whole machine."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def cpu_seconds(processes: list[psutil.Process]) -> float:
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def percent(self) -> float:
        processes = server_processes()
        now = time.time()
        used = self.cpu_seconds(processes)
        with self._lock:
            if self._last is None:
                # First scrape in this process: the average since the server started.
                since, used_before = processes[0].create_time(), 0.0
            else:
                since, used_before = self._last
            self._last = (now, used)
        elapsed = now - since
        if elapsed <= 0:
            return 0.0
        # A worker that exited takes its CPU time with it: never report below zero.
        share = max(used - used_before, 0.0) / elapsed / (psutil.cpu_count() or 1)
        return min(share * 100.0, 100.0)


cpu_meter = CpuMeter()


@scrape_gauge(
    "traversion_cpu_usage_percent",
    "CPU used by the server process tree since the previous scrape, percent of all cores.",
    cached=False,
)
def cpu_usage():
    return [((), cpu_meter.percent())]


@scrape_gauge(
    "traversion_uptime_seconds", "Seconds since the server process started.", cached=False
)
def uptime():
    return [((), time.time() - server_processes()[0].create_time())]


# --- dependencies ---------------------------------------------------------------------


def check_postgres() -> bool:
    import psycopg

    db = settings.DATABASES["default"]
    params = {
        "dbname": db.get("NAME"),
        "user": db.get("USER"),
        "password": db.get("PASSWORD"),
        "host": db.get("HOST"),
        "port": db.get("PORT"),
    }
    conninfo = {key: str(value) for key, value in params.items() if value}
    # libpq rounds connect_timeout up to 2 s; a stopped server refuses at once anyway.
    with psycopg.connect(connect_timeout=2, **conninfo) as connection:
        connection.execute("SELECT 1")
    return True


def redis_urls() -> list[str]:
    urls = []
    if settings.REDIS_URL:
        urls.append(settings.REDIS_URL)
    broker = settings.CELERY_BROKER_URL
    if urlparse(broker).scheme in ("redis", "rediss") and broker not in urls:
        urls.append(broker)
    return urls


def check_redis() -> bool:
    import redis

    for url in redis_urls():
        client = redis.Redis.from_url(
            url,
            socket_timeout=DEPENDENCY_TIMEOUT_SECONDS,
            socket_connect_timeout=DEPENDENCY_TIMEOUT_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()
    return True


def check_prometheus() -> bool:
    import requests

    response = requests.get(
        f"{settings.PROMETHEUS_URL}/-/ready", timeout=DEPENDENCY_TIMEOUT_SECONDS
    )
    return response.status_code == 200


def configured_dependencies() -> dict[str, object]:
    """Only what this deployment uses: SQLite runs have no postgres series, and so on."""
    checks: dict[str, object] = {}
    if connections["default"].vendor == "postgresql":
        checks["postgres"] = check_postgres
    if redis_urls():
        checks["redis"] = check_redis
    if settings.PROMETHEUS_URL:
        checks["prometheus"] = check_prometheus
    return checks


def dependency_states() -> dict[str, bool]:
    states = {}
    for name, check in configured_dependencies().items():
        try:
            states[name] = bool(check())
        except Exception as exc:  # any error from a client means "down"
            logger.info("dependency %s is down: %s: %s", name, type(exc).__name__, exc)
            states[name] = False
    return states


@scrape_gauge(
    "traversion_dependency_up",
    "1 when a dependency (postgres, redis, prometheus) answered its check, else 0.",
    ["dependency"],
)
def dependency_up():
    return [((name,), 1 if up else 0) for name, up in dependency_states().items()]
