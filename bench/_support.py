"""Helpers shared by the bench scenarios: database, servers, load, tables.

Every scenario runs against its own database, recreated from scratch
(`BENCH_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/traversion_bench)
and Redis (`BENCH_REDIS_URL`, default redis://127.0.0.1:6379/15), so a run never
touches development or test data.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
GUNICORN_CONF = BASE_DIR / "traversion_site" / "gunicorn.conf.py"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/traversion_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
BENCH_SECRET_KEY = "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)


def app_env(**overrides: str) -> dict[str, str]:
    """Environment for a Traversion process of the bench (server, setup, worker)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "TRAVERSION_SERVER_PID")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="traversion_site.settings",
        SECRET_KEY=os.environ.get("SECRET_KEY") or BENCH_SECRET_KEY,
        DATABASE_URL=database_url(),
        REDIS_URL=redis_url(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(BASE_DIR),
    )
    env.update(overrides)
    return env


def fresh_database(url: str | None = None) -> str:
    """Drop and recreate the bench database, then migrate it. Returns its URL."""
    url = url or database_url()
    parsed = urlparse(url)
    if parsed.scheme.startswith("postgres"):
        import psycopg

        name = parsed.path.lstrip("/")
        admin = {
            "host": parsed.hostname or "127.0.0.1",
            "port": parsed.port or 5432,
            "user": parsed.username or "postgres",
            "password": parsed.password or None,
            "dbname": "postgres",
        }
        with psycopg.connect(**{k: v for k, v in admin.items() if v}, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    elif parsed.scheme == "sqlite":
        Path(parsed.path).unlink(missing_ok=True)
    manage("migrate", "--noinput", env=app_env(DATABASE_URL=url))
    return url


def manage(*command: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *command],
        cwd=BASE_DIR,
        env=env or app_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def setup_django(**env: str) -> None:
    """Configure Django in this process (to create bench data with the ORM)."""
    os.environ.update(app_env(**env))
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A gunicorn web server started with the project's gunicorn.conf.py."""

    env: dict[str, str]
    workers: int = 1
    worker_class: str = "uvicorn_worker.UvicornWorker"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def app(self) -> str:
        sync = self.worker_class in ("sync", "gthread")
        return "traversion_site.wsgi:application" if sync else "traversion_site.asgi:application"

    def start(self, timeout: float = 60.0) -> Server:
        command = [
            str(BIN_DIR / "gunicorn"),
            "--config",
            str(GUNICORN_CONF),
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
            self.app,
        ]
        env = dict(self.env)
        if self.app.endswith("asgi:application"):
            # Under ASGI each request's sync code runs in a thread of its own, and Django
            # never closes a persistent connection left in a finished thread: with the
            # default CONN_MAX_AGE a load test exhausts PostgreSQL's max_connections.
            env.setdefault("DATABASE_CONN_MAX_AGE", "0")
        self.process = subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if get(self.port, "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def cpu_time(self) -> float:
        """CPU seconds of the process tree, to the nanosecond (cpu_seconds: clock ticks).

        Each process's CPU-time clock (clock_getcpuclockid) counts every thread it ever
        ran, including the short-lived ones an ASGI worker starts for each request.
        """
        total = 0.0
        for process in self.tree():
            total += process_cpu_seconds(process)
        return total

    def pin(self, cpus: set[int]) -> None:
        """Run the server's processes, and every thread they have or start, on `cpus`."""
        for process in self.tree():
            try:
                for thread in process.threads():
                    os.sched_setaffinity(thread.id, cpus)
            except (psutil.Error, OSError):
                continue

    def rss_bytes(self) -> int:
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def process_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of a process, from its CPU-time clock where the OS has one."""
    try:
        # Linux's clock_getcpuclockid(pid): CPUCLOCK_SCHED of the whole thread group.
        return time.clock_gettime(((~process.pid) << 3) | 2)
    except (OSError, OverflowError, AttributeError):
        pass
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def load(
    port: int,
    path: str,
    *,
    seconds: float,
    concurrency: int = 4,
    headers: dict[str, str] | None = None,
    max_requests: int | None = None,
) -> LoadResult:
    """Closed-loop GETs from `concurrency` threads (keep-alive when the server allows)."""
    stop_at = time.monotonic() + seconds
    statuses: Counter = Counter()
    lock = threading.Lock()
    budget = {"left": max_requests if max_requests is not None else -1}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local: Counter = Counter()
        while time.monotonic() < stop_at:
            with lock:
                if budget["left"] == 0:
                    break
                budget["left"] -= 1
            try:
                conn.request("GET", path, headers=headers or {})
                response = conn.getresponse()
                response.read()
                local[response.status] += 1
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                local["error"] += 1
                conn.close()
        conn.close()
        with lock:
            statuses.update(local)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return LoadResult(sum(v for k, v in statuses.items() if k != "error"), elapsed, statuses)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    sys.stdout.flush()
