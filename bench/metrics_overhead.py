"""Metrics overhead: requests/s and CPU per request, ENABLE_METRICS=true vs false, paired.

Two gunicorn servers run side by side on a fresh database, one with metrics on (in
multiprocess mode, as in production) and one with them off; both use the project's
gunicorn.conf.py and the same worker class. Endpoints:

- trivial: GET /healthz (a JSON view, no database);
- representative: GET /api/v1/api-keys/ with an API key (authentication, tenant
  resolution, a 20-row page from PostgreSQL: the DB backend's metrics and the execute
  wrapper run on every statement).

Built to resolve a difference of 2 % on a machine other workloads share. The servers
are pinned to one CPU and the load clients to the others (`--pin auto`, with 2+ CPUs).
Each of many short slices (default 120 x 1 s per endpoint) loads both servers at once,
each from a client process of its own with the same closed-loop load: the two servers
share one CPU in the same time window, so whatever else runs on the machine slows both
alike, and the kernel's fair share gives each the same CPU time, which makes the
throughput ratio the inverse of the CPU-per-request ratio. Per slice: the throughput
ratio on/off and the CPU-per-request ratio off/on (the server process tree's CPU-time
clocks, nanosecond resolution); 1.0 = no cost, lower = metrics cost more. Reported: the
median of each over the slices and their interquartile range, CPU per request in each
mode (total CPU / total requests), the servers' resident memory at the end, and the
metrics code alone, timed in-process (bench/_instrumentation_cost.py).

Two biases of the method are cancelled by design: which server's load goes first
alternates from round to round, and the servers are started again, in the other order,
for the second half of the rounds (with metrics off on both, the server started first
came out 1.5 to 2.5 % dearer per request on the representative endpoint).
`--calibrate` runs the same with metrics off on both servers ("on" is then a second
"off"): the method's own bias and spread, to read the ratios against.

`--schedule alternate` loads one server at a time instead, alternating which goes first
(the old method; twice as long, and its pairs see different background load).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import _support as support


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=120, help="paired slices per endpoint (120)")
    parser.add_argument("--seconds", type=float, default=1.0, help="load per slice (default 1)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up load per server")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per server")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument(
        "--worker-class",
        default="uvicorn_worker.UvicornWorker",
        help="gunicorn worker class: uvicorn_worker.UvicornWorker (make run) or sync",
    )
    parser.add_argument("--keys", type=int, default=20, help="API keys in the listed page")
    parser.add_argument(
        "--schedule",
        choices=("concurrent", "alternate"),
        default="concurrent",
        help="concurrent: both servers loaded at once on one CPU (default); "
        "alternate: one server at a time, alternating order",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="metrics off on both servers: the method's own bias (ratios should be 1.0)",
    )
    parser.add_argument(
        "--pin",
        choices=("auto", "off"),
        default="auto",
        help="auto: servers on the last CPU, client on the others (needs 2+ CPUs)",
    )


def prepare_data(keys: int) -> str:
    """A tenant with `keys` API keys; returns an admin key for the representative call."""
    support.setup_django()
    from tenants.models import ApiKey, Tenant

    tenant = Tenant.objects.create(slug="bench", name="Bench")
    for i in range(keys - 1):
        ApiKey.issue(tenant, f"key-{i}")
    _, raw_key = ApiKey.issue(tenant, "bench-admin", role="admin")
    return raw_key


def check(path: str, result: support.LoadResult) -> None:
    bad = {k: v for k, v in result.statuses.items() if k != 200}
    if bad:
        raise RuntimeError(f"{path}: unexpected answers {bad}")


def measure(server: support.Server, path: str, headers: dict, args) -> tuple[int, float, float]:
    """One slice on one server: (requests, seconds, server CPU seconds)."""
    cpu_before = server.cpu_time()
    result = support.load(
        server.port, path, seconds=args.seconds, concurrency=args.concurrency, headers=headers
    )
    cpu = server.cpu_time() - cpu_before
    check(path, result)
    return result.requests, result.seconds, cpu


def _load_in_child(port: int, path: str, seconds: float, concurrency: int, headers: dict):
    return support.load(port, path, seconds=seconds, concurrency=concurrency, headers=headers)


def measure_both(
    servers: dict, clients, path: str, headers: dict, args, order: tuple[str, str]
) -> dict:
    """One slice on both servers at once, each from a client process of its own; `order`
    is which server's CPU clock is read, and load is sent, first."""
    before = {mode: servers[mode].cpu_time() for mode in order}
    futures = {
        mode: clients[mode].submit(
            _load_in_child, servers[mode].port, path, args.seconds, args.concurrency, headers
        )
        for mode in order
    }
    results = {mode: future.result() for mode, future in futures.items()}
    samples = {}
    for mode in order:
        cpu = servers[mode].cpu_time() - before[mode]
        check(path, results[mode])
        samples[mode] = (results[mode].requests, results[mode].seconds, cpu)
    return samples


def cpu_layout(pin: str) -> tuple[set[int], set[int]] | None:
    """(server CPUs, client CPUs), or None to leave scheduling alone."""
    if pin == "off" or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(on: list[tuple], off: list[tuple]) -> dict:
    """Per-pair ratios and their median, from the slices of one endpoint."""
    throughput = [(a[0] / a[1]) / (b[0] / b[1]) for a, b in zip(on, off, strict=True)]
    cpu = [(b[2] / max(b[0], 1)) / (a[2] / max(a[0], 1)) for a, b in zip(on, off, strict=True)]
    return {
        "rps_on": sum(s[0] for s in on) / sum(s[1] for s in on),
        "rps_off": sum(s[0] for s in off) / sum(s[1] for s in off),
        "ratio": statistics.median(throughput),
        "ratio_iqr": quartiles(throughput),
        "cpu_on": sum(s[2] for s in on) / max(sum(s[0] for s in on), 1) * 1e6,
        "cpu_off": sum(s[2] for s in off) / max(sum(s[0] for s in off), 1) * 1e6,
        "cpu_ratio": statistics.median(cpu),
        "cpu_ratio_iqr": quartiles(cpu),
    }


def serve_and_measure(args, layout, starts, rounds: int, endpoints, samples: dict) -> dict:
    """Start both servers (in the order `starts`), run `rounds` rounds into `samples`;
    returns the servers' resident memory at the end."""
    enabled = {"on": "false" if args.calibrate else "true", "off": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        for mode in starts:
            directory = Path(tmp) / mode
            directory.mkdir()
            env = support.app_env(
                ENABLE_METRICS=enabled[mode], PROMETHEUS_MULTIPROC_DIR=str(directory)
            )
            servers[mode] = support.Server(
                env, workers=args.workers, worker_class=args.worker_class
            ).start()
        client_cpus = os.sched_getaffinity(0) if layout else None
        try:
            if layout:
                for server in servers.values():
                    server.pin(layout[0])
                os.sched_setaffinity(0, layout[1])
            for server in servers.values():
                for _, path, headers in endpoints:
                    support.load(server.port, path, seconds=args.warmup, headers=headers)
            if args.schedule == "concurrent":
                context = multiprocessing.get_context("fork")
                clients = {mode: ProcessPoolExecutor(1, mp_context=context) for mode in servers}
                try:
                    for round_number in range(rounds):
                        # Which server goes first alternates, so that going first is no bias.
                        order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
                        for name, path, headers in endpoints:
                            pair = measure_both(servers, clients, path, headers, args, order)
                            for mode, sample in pair.items():
                                samples[name][mode].append(sample)
                finally:
                    for client in clients.values():
                        client.shutdown()
            else:
                for round_number in range(rounds):
                    order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
                    for name, path, headers in endpoints:
                        for mode in order:
                            samples[name][mode].append(measure(servers[mode], path, headers, args))
            return {mode: server.rss_bytes() for mode, server in servers.items()}
        finally:
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)
            for server in servers.values():
                server.stop()


def run(args: argparse.Namespace) -> int:
    support.fresh_database()
    raw_key = prepare_data(args.keys)
    endpoints = [
        ("trivial", "/healthz", {}),
        ("representative", "/api/v1/api-keys/", {"Authorization": f"Api-Key {raw_key}"}),
    ]
    layout = cpu_layout(args.pin)
    samples = {name: {"on": [], "off": []} for name, _, _ in endpoints}
    rss: dict[str, int] = {}
    # The server started first came out about 2 % dearer with metrics off on both
    # (--calibrate): each half of the rounds starts the two servers in the other order.
    half = (args.rounds + 1) // 2
    for starts, rounds in ((("on", "off"), half), (("off", "on"), args.rounds - half)):
        if rounds:
            rss = serve_and_measure(args, layout, starts, rounds, endpoints, samples)

    rows = []
    for name, _, _ in endpoints:
        s = summarize(samples[name]["on"], samples[name]["off"])
        rows.append(
            [
                name,
                f"{s['rps_on']:.0f}",
                f"{s['rps_off']:.0f}",
                f"{s['ratio']:.3f}",
                "{:.3f}-{:.3f}".format(*s["ratio_iqr"]),
                f"{s['cpu_on']:.0f}",
                f"{s['cpu_off']:.0f}",
                f"{s['cpu_ratio']:.3f}",
                "{:.3f}-{:.3f}".format(*s["cpu_ratio_iqr"]),
            ]
        )
    pinning = (
        f"servers on CPU {sorted(layout[0])}, client on CPU {sorted(layout[1])}"
        if layout
        else "not pinned"
    )
    schedule = (
        "both servers loaded at once, a client process each"
        if args.schedule == "concurrent"
        else "one server at a time, alternating"
    )
    print(
        f"\nworker class {args.worker_class}, {args.workers} worker(s) per server, "
        f"{args.concurrency} client threads per server, {args.rounds} rounds x "
        f"{args.seconds:g} s per endpoint, {schedule}; {pinning}; the servers are started "
        "again in the other order for the second half of the rounds"
    )
    if args.calibrate:
        print("calibration: metrics are OFF on both servers ('on' is a second 'off')")
    print(
        "ratio = requests/s on/off, cpu ratio = CPU per request off/on "
        "(medians of the per-round pairs; 1.0 = no cost)"
    )
    support.print_table(
        [
            "endpoint",
            "req/s on",
            "req/s off",
            "ratio",
            "ratio IQR",
            "cpu us/req on",
            "cpu us/req off",
            "cpu ratio",
            "cpu ratio IQR",
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
