"""Event ingestion and causality: events/s through POST /api/v1/events, engine rate and lag.

On a fresh PostgreSQL database, gunicorn (the project's gunicorn.conf.py, the `make run`
worker class) serves the API; closed-loop client threads post pre-built batches with a
tenant API key over keep-alive connections. Every request goes the production path:
validation, quota charge, bulk INSERT, outbox row, and the Celery task sent to Redis on
commit. Phases:

1. ingest with batches of 100, then of 1,000 (no Celery worker: ingest alone);
2. drain: a real Celery worker (`celery worker`, prefork) works off the backlog the
   ingest phases left; events/s of the causality engine, links stored;
3. steady: ingest batches of 1,000 at a fixed rate (by default half the drain rate)
   for twice --seconds while the worker runs; lag = age of the oldest batch not yet
   processed, sampled every 0.5 s until the engine has caught up.

The event mix is a platform's: 20 services; mostly logs and metrics, errors and
exceptions, a few deploys, config changes and alerts, some with correlation ids.
Everything shares the machine's cores (client, server, worker, PostgreSQL, Redis). The
bench runs ANALYZE on the event tables every 30 s while they grow, as autovacuum would
(it is off on the development machines' PostgreSQL).
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
    parser.add_argument(
        "--steady-rate",
        type=float,
        default=0.0,
        help="events/s of the steady phase (default: half the measured causality rate)",
    )


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


def analyze() -> None:
    """Refresh the planner's statistics of the event tables, as autovacuum would.

    This machine's PostgreSQL runs with autovacuum off; production keeps it on (the
    default), and its ANALYZE would have run several times on tables growing this fast.
    Without statistics the planner picks the (tenant, timestamp) index for the engine's
    per-(service, type) candidate scans, a hundred times slower.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "ANALYZE events_event, events_causallink, events_eventchain, events_causalitybatch"
        )


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


ANALYZE_EVERY = 30.0


def drain(timeout: float = 900.0) -> tuple[float, int]:
    """Wait until the outbox is empty; (seconds, events processed)."""
    waiting, _ = backlog()
    started = last_analyze = time.monotonic()
    while time.monotonic() - started < timeout:
        left, _ = backlog()
        if not left:
            return time.monotonic() - started, waiting
        if time.monotonic() - last_analyze > ANALYZE_EVERY:
            analyze()
            last_analyze = time.monotonic()
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
            analyze()
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
                rate = args.steady_rate or max(1000.0, round(events / seconds / 2, -3))
                rows += steady(server.port, bodies[1000], key, rate, args)
            finally:
                stop_worker(worker)
    print()
    support.print_table(
        ["phase", "events/s", "requests/s", "p50 / p95 ms", "CPU µs/event", "total"], rows
    )
    return 0


def paced_post(port: int, bodies: list[bytes], key: str, rate: float, seconds: float) -> PostResult:
    """POST batches of 1,000 at `rate` events/s (open loop: a late batch goes at once)."""
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    result = PostResult()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    interval = 1000 / rate
    started = time.monotonic()
    due, i = started, 0
    while due < started + seconds:
        time.sleep(max(0.0, due - time.monotonic()))
        sent = time.monotonic()
        conn.request("POST", "/api/v1/events", body=bodies[i % len(bodies)], headers=headers)
        response = conn.getresponse()
        payload = response.read()
        result.latencies.append(time.monotonic() - sent)
        if response.status != 201:
            raise RuntimeError(f"steady ingest: {response.status} {payload[:200]!r}")
        result.events += json.loads(payload)["accepted"]
        result.requests += 1
        due += interval
        i += 1
    conn.close()
    result.seconds = time.monotonic() - started
    return result


def steady(port: int, bodies: list[bytes], key: str, rate: float, args) -> list[list[str]]:
    """Ingest at a fixed rate with the worker running; sample the engine's lag throughout."""
    samples: list[tuple[int, float]] = []
    done = threading.Event()

    def sampler() -> None:
        last_analyze = time.monotonic()
        while not done.is_set():
            samples.append(backlog())
            if time.monotonic() - last_analyze > ANALYZE_EVERY:
                analyze()
                last_analyze = time.monotonic()
            time.sleep(0.5)

    thread = threading.Thread(target=sampler)
    links_before = links_stored()
    thread.start()
    try:
        result = paced_post(port, bodies, key, rate, args.seconds * 2)
        catch_up, _ = drain()
    finally:
        done.set()
        thread.join()
    lags = sorted(age for _, age in samples)
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] if lags else 0.0  # noqa: E731
    return [
        [
            f"steady, ingest {rate:,.0f} ev/s (worker on)",
            f"{result.events_per_second:,.0f}",
            f"{result.requests / result.seconds:,.1f}",
            f"{result.percentile(0.5):.0f} / {result.percentile(0.95):.0f}",
            "",
            f"{result.events:,}",
        ],
        [
            "steady, causality lag",
            "",
            "",
            "",
            "",
            f"{links_stored() - links_before:,} links; lag p50 {pick(0.5):.1f} s, "
            f"p95 {pick(0.95):.1f} s, max {lags[-1] if lags else 0:.1f} s; "
            f"max backlog {max((n for n, _ in samples), default=0):,} ev; "
            f"done {catch_up:.1f} s after the last batch",
        ],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
