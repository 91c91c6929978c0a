"""Evaluation scale: one full pass of N sql rules on a Celery worker, and how it grows.

On a fresh PostgreSQL database: --tenants tenants (default 100) and, for the largest
step, enough sql rules per tenant to reach it, over --events events (default 1 M,
written with one INSERT ... SELECT generate_series) and --audit audit rows. The rules
and data are those of `bench/evaluation.py` (the guide's counts and group-bys over
`events`, `auth_attempts` and `audit_log`, 5 templates x 20 windows, 2 % firing).

For each step (default 1,000 and 10,000 rules; `--steps 1000,10000,50000` for the
issue's full curve) only that many rules are enabled (the same number per tenant), a
real worker (--concurrency prefork processes, on Redis) is sent the tick's per-tenant
tasks, and the pass is timed until every enabled rule has been evaluated. Each step
runs --passes passes; the table gives each pass and the growth per rule.

`--shared-scans both` (the default) runs every step twice in the same run, first with
`ALERT_SQL_SHARED_SCANS=false` (each rule its own query: before), then `true` (one
statement per tenant, one scan per view: after), each with a fresh worker, and prints
the ratio of the best passes.

Machines of one kind differ (the same code and data took 5.2 to 6.2 s on one and 2.6 s
on another). Before the passes the bench measures the two figures issue 10 gives for
the machine it was written on, for comparison: the round trip of one indexed rule query
alone (~1.1 ms there) and one grouped query over every tenant (~95 ms there).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from . import _support as support
from . import evaluation as shared


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument(
        "--steps",
        default="1000,10000",
        help="comma-separated rule counts (each a multiple of --tenants)",
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in total")
    parser.add_argument("--audit", type=int, default=100_000, help="audit rows in total")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--passes", type=int, default=2, help="passes per step")
    parser.add_argument(
        "--shared-scans",
        choices=("both", "on", "off"),
        default="both",
        help="ALERT_SQL_SHARED_SCANS of the worker: both = off, then on (default)",
    )


def parse_steps(args: argparse.Namespace) -> list[int]:
    steps = sorted({int(s) for s in str(args.steps).split(",") if s.strip()})
    bad = [s for s in steps if s <= 0 or s % args.tenants]
    if bad:
        raise SystemExit(f"--steps: {bad} not positive multiples of --tenants ({args.tenants})")
    return steps


def enable(per_tenant: int) -> int:
    """Enable the first `per_tenant` rules of every tenant, disable the rest."""
    from alerts.models import AlertRule

    cut = f"rule_{per_tenant:04d}"
    # A pass's tasks expire at the rules' next slot (a late evaluation is skipped, the next
    # one is not): with the 60 s interval of the shared rules, a pass longer than a minute
    # (50,000 rules on 2 processes here) would lose its tail instead of being timed.
    AlertRule.objects.update(evaluation_interval=3_600_000)
    AlertRule.objects.filter(name__lt=cut).update(enabled=True)
    AlertRule.objects.filter(name__gte=cut).update(enabled=False)
    return AlertRule.objects.filter(enabled=True).count()


#: Issue 10's figures for the machine it was written on: one indexed rule query's round
#: trip, and one grouped query over 100 tenants, over the bench's 1 M events.
REFERENCE_QUERY_MS = 1.1
REFERENCE_GROUPED_MS = 95.0
CALIBRATION_QUERY = (
    "SELECT count(*) FROM events_event WHERE tenant_id = %s AND event_type = 'error' "
    "AND timestamp > now() - interval '10 minutes'"
)
CALIBRATION_GROUPED = (
    "SELECT tenant_id, service_id, count(*) FROM events_event "
    "WHERE timestamp > now() - interval '10 minutes' AND severity = 'error' "
    "GROUP BY tenant_id, service_id"
)


def calibrate(rounds: int = 500) -> tuple[float, float]:
    """(ms per indexed rule query, ms per grouped query over every tenant): medians of
    round trips on one connection, the tenants taken in turn."""
    from django.db import connection

    from tenants.models import Tenant

    tenants = list(Tenant.objects.order_by("pk").values_list("pk", flat=True))
    single, grouped = [], []
    with connection.cursor() as cursor:
        for i in range(rounds):
            started = time.perf_counter()
            cursor.execute(CALIBRATION_QUERY, [tenants[i % len(tenants)]])
            cursor.fetchall()
            single.append(time.perf_counter() - started)
        for _ in range(max(5, rounds // 50)):
            started = time.perf_counter()
            cursor.execute(CALIBRATION_GROUPED)
            cursor.fetchall()
            grouped.append(time.perf_counter() - started)
    return 1000 * support.median(single), 1000 * support.median(grouped)


def pass_cpu_seconds(worker_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the engine (the worker's process tree, and this process,
    which plays beat: the tick) and by the PostgreSQL backends connected to the bench
    database (the worker keeps its connections for the whole run)."""
    import psutil
    from django.db import connection

    root = psutil.Process(worker_pid)
    worker = sum(support.process_cpu_seconds(p) for p in [root, *root.children(recursive=True)])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend'"
        )
        pids = [row[0] for row in cursor.fetchall()]
    database = 0.0
    for pid in pids:
        try:
            database += support.process_cpu_seconds(psutil.Process(pid))
        except psutil.Error:
            pass
    return worker, database


def run(args: argparse.Namespace) -> int:
    import redis

    steps = parse_steps(args)
    support.fresh_database()
    support.setup_django(CELERY_BROKER_URL=support.redis_url())
    redis.Redis.from_url(support.redis_url()).delete("celery", "unacked", "unacked_index")
    started = time.monotonic()
    args.rules = steps[-1] // args.tenants
    shared.prepare(args)
    print(
        f"prepared {args.tenants} tenants x {args.rules} rules = {steps[-1]:,} rules, "
        f"{args.events:,} events, {args.audit:,} audit rows in "
        f"{time.monotonic() - started:.1f} s ({os.cpu_count()} cores)",
        flush=True,
    )
    query_ms, grouped_ms = calibrate()
    print(
        f"calibration: one indexed rule query {query_ms:.3f} ms (issue 10's machine: "
        f"{REFERENCE_QUERY_MS} ms), one grouped query over {args.tenants} tenants "
        f"{grouped_ms:.1f} ms (issue 10's machine: {REFERENCE_GROUPED_MS:.0f} ms)",
        flush=True,
    )
    modes = {"both": ("off", "on"), "on": ("on",), "off": ("off",)}[args.shared_scans]
    rows = []
    best: dict[tuple[int, str], float] = {}
    for mode in modes:
        log = tempfile.NamedTemporaryFile(prefix="bench-scale-worker-", suffix=".log", delete=False)
        os.environ["ALERT_SQL_SHARED_SCANS"] = "true" if mode == "on" else "false"
        worker = shared.start_worker(args.concurrency, log)
        try:
            shared.wait_until(
                lambda log=log: b" ready." in open(log.name, "rb").read(), 120, "the worker"
            )
            for step in steps:
                total = enable(step // args.tenants)
                for number in range(1, args.passes + 1):
                    load = os.getloadavg()[0]
                    before = []
                    claimed, seconds = shared.celery_pass(
                        total,
                        on_start=lambda b=before, w=worker: b.extend(pass_cpu_seconds(w.pid)),
                    )
                    worker_after, database_after = pass_cpu_seconds(worker.pid)
                    worker_cpu = worker_after - before[0]
                    database_cpu = database_after - before[1]
                    key = (total, mode)
                    best[key] = min(best.get(key, seconds), seconds)
                    rows.append(
                        (
                            f"{total:,}",
                            mode,
                            number,
                            f"{seconds:.2f}",
                            f"{claimed / seconds:,.0f}",
                            f"{1000 * seconds / claimed:.2f}",
                            f"{worker_cpu:.2f}",
                            f"{database_cpu:.2f}",
                            f"{(worker_cpu + database_cpu) / args.concurrency:.2f}",
                            f"{load:.1f}",
                        )
                    )
                    print(f"  {total:,} rules, shared scans {mode}, pass {number}: {seconds:.2f} s")
        finally:
            shared.stop_worker(worker)
    print(f"\n{args.concurrency} worker processes; load = 1-minute load average before the pass")
    print(
        "engine cpu / postgres cpu = CPU seconds of the engine (worker processes, and the tick "
        "in this process) and of the PostgreSQL backends serving them during the pass; "
        f"cpu/cores = their sum over {args.concurrency} cores: the pass on an otherwise idle machine"
    )
    support.print_table(
        [
            "rules", "shared scans", "pass", "seconds", "rules/s", "ms/rule", "engine cpu",
            "postgres cpu", "cpu/cores", "load",
        ],
        rows,
    )  # fmt: skip
    if len(modes) == 2:
        for step in steps:
            off, on = best[(step, "off")], best[(step, "on")]
            print(
                f"{step:,} rules, best pass: off {off:.2f} s, on {on:.2f} s, off/on {off / on:.2f}"
            )
    return 0
