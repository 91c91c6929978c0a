"""Metrics overhead: requests/s and CPU per request, ENABLE_METRICS=true vs false, alternating.

Two gunicorn servers run side by side on a fresh database, one with metrics on (in
multiprocess mode, as in production) and one with them off; both use the project's
gunicorn.conf.py and the same worker class. Each round loads each endpoint on both
servers, in alternating order, for the same duration with the same closed-loop client;
only one server is loaded at a time. Endpoints:

- trivial: GET /healthz (a JSON view, no database);
- representative: GET /api/v1/api-keys/ with an API key (authentication, tenant
  resolution, a 20-row page from PostgreSQL: the DB wrapper and the execute wrapper
  run on every statement).

Reported per endpoint: the median over rounds of the on/off throughput ratio (1.0 = no
cost), the CPU the server tree spent per request in each mode and their ratio, and the
servers' resident memory at the end; then the metrics code alone, timed in-process
(bench/_instrumentation_cost.py), which is free of network and scheduling noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from . import _support as support


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=4.0, help="load per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up load per server")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per server")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument(
        "--worker-class",
        default="uvicorn_worker.UvicornWorker",
        help="gunicorn worker class: uvicorn_worker.UvicornWorker (make run) or sync",
    )
    parser.add_argument("--keys", type=int, default=20, help="API keys in the listed page")


def prepare_data(keys: int) -> str:
    """A tenant with `keys` API keys; returns an admin key for the representative call."""
    support.setup_django()
    from tenants.models import ApiKey, Tenant

    tenant = Tenant.objects.create(slug="bench", name="Bench")
    for i in range(keys - 1):
        ApiKey.issue(tenant, f"key-{i}")
    _, raw_key = ApiKey.issue(tenant, "bench-admin", role="admin")
    return raw_key


def measure(server: support.Server, path: str, headers: dict, args) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request)."""
    cpu_before = server.cpu_seconds()
    result = support.load(
        server.port, path, seconds=args.seconds, concurrency=args.concurrency, headers=headers
    )
    cpu = server.cpu_seconds() - cpu_before
    bad = {k: v for k, v in result.statuses.items() if k != 200}
    if bad:
        raise RuntimeError(f"{path}: unexpected answers {bad}")
    return result.per_second, cpu / max(result.requests, 1) * 1e6


def run(args: argparse.Namespace) -> int:
    support.fresh_database()
    raw_key = prepare_data(args.keys)
    endpoints = [
        ("trivial", "/healthz", {}),
        ("representative", "/api/v1/api-keys/", {"Authorization": f"Api-Key {raw_key}"}),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        for mode, enabled in (("on", "true"), ("off", "false")):
            directory = Path(tmp) / mode
            directory.mkdir()
            env = support.app_env(ENABLE_METRICS=enabled, PROMETHEUS_MULTIPROC_DIR=str(directory))
            servers[mode] = support.Server(
                env, workers=args.workers, worker_class=args.worker_class
            ).start()
        try:
            for server in servers.values():
                for _, path, headers in endpoints:
                    support.load(server.port, path, seconds=args.warmup, headers=headers)
            samples = {name: {"on": [], "off": []} for name, _, _ in endpoints}
            for round_number in range(args.rounds):
                order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
                for name, path, headers in endpoints:
                    for mode in order:
                        samples[name][mode].append(measure(servers[mode], path, headers, args))
            rss = {mode: server.rss_bytes() for mode, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()

    rows = []
    for name, _, _ in endpoints:
        on, off = samples[name]["on"], samples[name]["off"]
        ratios = [a[0] / b[0] for a, b in zip(on, off, strict=True)]
        cpu_on = support.median(s[1] for s in on)
        cpu_off = support.median(s[1] for s in off)
        rows.append(
            [
                name,
                f"{support.median(s[0] for s in on):.0f}",
                f"{support.median(s[0] for s in off):.0f}",
                f"{support.median(ratios):.3f}",
                f"{min(ratios):.3f}-{max(ratios):.3f}",
                f"{cpu_on:.0f}",
                f"{cpu_off:.0f}",
                f"{cpu_off / cpu_on:.3f}",
            ]
        )
    print(
        f"\nworker class {args.worker_class}, {args.workers} worker(s) per server, "
        f"{args.concurrency} client threads, {args.rounds} rounds x {args.seconds:g} s"
    )
    support.print_table(
        [
            "endpoint",
            "req/s on",
            "req/s off",
            "ratio",
            "ratio range",
            "cpu us/req on",
            "cpu us/req off",
            "cpu ratio",
        ],
        rows,
    )
    print(
        f"server RSS at the end: on {rss['on'] / 2**20:.1f} MiB, off {rss['off'] / 2**20:.1f} MiB, "
        f"difference {(rss['on'] - rss['off']) / 2**20:+.1f} MiB"
    )
    cost = instrumentation_cost()
    print(
        f"metrics code alone (in-process, multiprocess mode): "
        f"{cost['request_us']:.1f} us per request (middleware pair), "
        f"{cost['statement_us']:.1f} us per SQL statement (execute wrapper)"
    )
    return 0


def instrumentation_cost() -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench._instrumentation_cost"],
        cwd=support.BASE_DIR,
        env=support.app_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
