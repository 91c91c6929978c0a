"""Event ingestion and causality: events/s through POST /api/v1/events, engine rate and lag.

On a fresh PostgreSQL database, gunicorn (the project's gunicorn.conf.py, the `make run`
worker class) serves the API; closed-loop client threads post pre-built batches with a
tenant API key over keep-alive connections. Every request goes the production path:
validation, quota charge, bulk INSERT, outbox row, and the Celery task sent to Redis on
commit. Phases:

1. ingest with batches of 100, then of 1,000 (no Celery worker: ingest alone);
2. drain: a real Celery worker (`celery worker`, prefork) works off the backlog the
   ingest phases left; events/s of the causality engine, links stored;
3. steady: ingest (batches of 1,000) while the worker runs; ingest rate, causality
   rate, and lag = age of the oldest batch still waiting, sampled every 0.5 s, then the
   time to catch up after the load stops.

The event mix is a platform's: 20 services; mostly logs and metrics, errors and
exceptions, a few deploys, config changes and alerts, some with correlation ids.
Everything shares the machine's cores (client, server, worker, PostgreSQL, Redis).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import _support as support

SERVICES = [f"svc-{i:02d}" for i in range(20)]
#: (event type, severity, weight)
MIX = [
    ("log", "info", 55),
    ("metric", "info", 20),
    ("error", "error", 12),
    ("exception", "error", 4),
    ("auth", "info", 4),
    ("deploy", "info", 1),
    ("config_change", "info", 1),
    ("security", "warning", 1),
    ("alert", "critical", 2),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=15.0, help="load per ingest phase")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--worker-class",
        default="uvicorn_worker.UvicornWorker",
        help="gunicorn worker class: uvicorn_worker.UvicornWorker (make run) or sync",
    )
    parser.add_argument("--celery-concurrency", type=int, default=2, help="Celery processes")
    parser.add_argument(
        "--batches", default="100,1000", help="batch sizes of phase 1, comma-separated"
    )
    parser.add_argument("--skip-causality", action="store_true", help="phase 1 only")


def build_bodies(size: int, count: int, seed: int = 7) -> list[bytes]:
    """`count` JSON bodies of `size` events, timestamps spread over the last 20 minutes."""
    rng = random.Random(seed + size)
    types = [(t, s) for t, s, w in MIX for _ in range(w)]
    start = datetime.now(UTC) - timedelta(minutes=20)
    span = 19 * 60
    bodies = []
    for b in range(count):
        base = start + timedelta(seconds=span * b / count)
        events = []
        for i in range(size):
            event_type, severity = rng.choice(types)
            at = base + timedelta(seconds=span / count * i / size)
            event = {
                "timestamp": at.isoformat(),
                "service_id": rng.choice(SERVICES),
                "event_type": event_type,
                "severity": severity,
                "message": f"{event_type} {rng.randrange(10**6)}",
                "attributes": {"host": f"node-{rng.randrange(8)}", "n": i},
            }
            if rng.random() < 0.1:
                event["correlation_id"] = f"req-{rng.randrange(2000)}"
            events.append(event)
        bodies.append(json.dumps(events).encode())
    return bodies


@dataclass
class PostResult:
    events: int = 0
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: dict = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def post_load(
    port: int, bodies: list[bytes], size: int, key: str, seconds: float, concurrency: int
) -> PostResult:
    """Closed-loop POSTs of pre-built bodies from `concurrency` threads for `seconds`."""
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    result = PostResult()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        latencies, accepted, failures, i = [], 0, {}, offset
        while time.monotonic() < stop_at:
            body = bodies[i % len(bodies)]
            i += concurrency
            started = time.monotonic()
            try:
                conn.request("POST", "/api/v1/events", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                conn.close()
                continue
            latencies.append(time.monotonic() - started)
            if response.status == 201:
                accepted += json.loads(payload)["accepted"]
            else:
                failures[response.status] = failures.get(response.status, 0) + 1
        conn.close()
        with lock:
            result.latencies += latencies
            result.events += accepted
            result.requests += len(latencies)
            for k, v in failures.items():
                result.failures[k] = result.failures.get(k, 0) + v

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - started
    return result


def prepare_tenant() -> str:
    support.setup_django()
    from tenants.models import ApiKey, Tenant

    tenant = Tenant.objects.create(slug="bench", name="Bench", storage_quota_bytes=10**12)
    _, raw_key = ApiKey.issue(tenant, "ingest")
    return raw_key


def backlog() -> tuple[int, float]:
    """(events waiting for the engine, age in seconds of the oldest waiting batch)."""
    from django.db.models import Min
    from django.utils import timezone

    from events.models import CausalityBatch

    rows = list(CausalityBatch.objects.values_list("event_ids", flat=True))
    oldest = CausalityBatch.objects.aggregate(oldest=Min("created_at"))["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return sum(len(ids) for ids in rows), age


def links_stored() -> int:
    from events.models import CausalLink

    return CausalLink.objects.count()


def tree_cpu_seconds(pid: int) -> float:
    """CPU (user + system) used so far by a process and its children."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def start_worker(concurrency: int) -> subprocess.Popen:
    env = support.app_env(CELERY_BROKER_URL=support.redis_url())
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "traversion_site",
            "worker",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=support.BASE_DIR,
        env=env,
        start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    import os

    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait()


def drain(timeout: float = 900.0) -> tuple[float, int]:
    """Wait until the outbox is empty; (seconds, events processed)."""
    waiting, _ = backlog()
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        left, _ = backlog()
        if not left:
            return time.monotonic() - started, waiting
        time.sleep(0.25)
    raise RuntimeError(f"the engine did not catch up within {timeout} s ({left} events left)")


def run(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C, so that the server and the worker are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    support.fresh_database()
    key = prepare_tenant()
    sizes = [int(s) for s in args.batches.split(",")]
    bodies = {size: build_bodies(size, max(8, 4000 // size)) for size in {*sizes, 1000}}
    env = support.app_env(CELERY_BROKER_URL=support.redis_url())
    rows = []
    with support.Server(env, workers=args.workers, worker_class=args.worker_class) as server:
        # Warm-up: connections, imports, first plans.
        post_load(server.port, bodies[sizes[0]], sizes[0], key, 2.0, args.concurrency)
        for size in sizes:
            cpu_before = server.cpu_seconds()
            result = post_load(server.port, bodies[size], size, key, args.seconds, args.concurrency)
            cpu = server.cpu_seconds() - cpu_before
            if result.failures:
                raise RuntimeError(f"batch {size}: failures {result.failures}")
            rows.append(
                [
                    f"ingest, batch {size}",
                    f"{result.events_per_second:,.0f}",
                    f"{result.requests / result.seconds:,.1f}",
                    f"{result.percentile(0.5):.0f} / {result.percentile(0.95):.0f}",
                    f"{cpu / max(result.events, 1) * 1e6:,.0f} (web)",
                    f"{result.events:,}",
                ]
            )
        if not args.skip_causality:
            worker = start_worker(args.celery_concurrency)
            try:
                links_before = links_stored()
                cpu_before = tree_cpu_seconds(worker.pid)
                seconds, events = drain()
                cpu = tree_cpu_seconds(worker.pid) - cpu_before
                rows.append(
                    [
                        "causality, drain backlog",
                        f"{events / seconds:,.0f}",
                        "",
                        "",
                        f"{cpu / max(events, 1) * 1e6:,.0f} (worker)",
                        f"{events:,} ev, {links_stored() - links_before:,} links",
                    ]
                )
                rows += steady(server.port, bodies[1000], key, args)
            finally:
                stop_worker(worker)
    print()
    support.print_table(
        ["phase", "events/s", "requests/s", "p50 / p95 ms", "CPU µs/event", "total"], rows
    )
    return 0


def steady(port: int, bodies: list[bytes], key: str, args) -> list[list[str]]:
    """Ingest at full speed with the worker running; sample the engine's lag."""
    samples: list[tuple[int, float]] = []
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            samples.append(backlog())
            time.sleep(0.5)

    thread = threading.Thread(target=sampler)
    links_before = links_stored()
    thread.start()
    try:
        result = post_load(port, bodies, 1000, key, args.seconds, args.concurrency)
    finally:
        done.set()
        thread.join()
    catch_up, _ = drain()
    processed_seconds = result.seconds + catch_up
    max_lag = max((age for _, age in samples), default=0.0)
    max_backlog = max((events for events, _ in samples), default=0)
    return [
        [
            "steady, ingest (worker on)",
            f"{result.events_per_second:,.0f}",
            f"{result.requests / result.seconds:,.1f}",
            f"{result.percentile(0.5):.0f} / {result.percentile(0.95):.0f}",
            "",
            f"{result.events:,}",
        ],
        [
            "steady, causality",
            f"{result.events / processed_seconds:,.0f}",
            "",
            "",
            "",
            f"{links_stored() - links_before:,} links; max lag {max_lag:.1f} s, "
            f"max backlog {max_backlog:,} ev, caught up {catch_up:.1f} s after",
        ],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
