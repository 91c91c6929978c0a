"""Rule evaluation at scale: a full pass over tenants x sql rules, and an alert storm.

On a fresh PostgreSQL database: N tenants with M sql rules each (the guide's kind of
rules over the `events`, `auth_attempts` and `audit_log` views: counts and group-bys on
a time window, each an indexed (tenant, time) range), over a million events and the
audit rows of logins. Phases:

1. claim: one tick claims every due rule (compare-and-set UPDATEs) and fans them out
   per tenant;
2. pass in this process (one core), cold (the SQL of each distinct query compiled on
   first use) and warm;
3. pass on Celery: a real worker (prefork, --celery-concurrency processes) on Redis; the
   tick sends one `alerts.evaluate_rules` task per tenant; timed until every rule has
   been evaluated (cold and warm);
4. alert storm: one rule whose query returns S rows starts firing: time until all S
   instances, history events and ledger rows (two webhook channels) are written, how
   many groups that makes per channel, and how many messages a local webhook receiver
   gets once the worker has delivered them.

Everything shares the machine's cores (this process, the worker, PostgreSQL, Redis).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import _support as support

#: (query template, operator) of the rules; {m} is the window in minutes.
TEMPLATES = [
    "SELECT count(*) AS value FROM events WHERE event_type = 'error' "
    "AND timestamp > now() - interval '{m} minutes'",
    "SELECT service_id, count(*) AS value FROM events WHERE severity = 'error' "
    "AND timestamp > now() - interval '{m} minutes' GROUP BY service_id",
    "SELECT count(*) AS value FROM auth_attempts WHERE result = 'failure' "
    "AND timestamp > now() - interval '{m} minutes'",
    "SELECT ip_address, count(DISTINCT username) AS value FROM auth_attempts "
    "WHERE result = 'failure' AND timestamp > now() - interval '{m} minutes' GROUP BY ip_address",
    "SELECT count(*) AS value FROM audit_log WHERE action = 'security.permission_denied' "
    "AND timestamp > now() - interval '{m} minutes'",
]
#: One rule in this many has a low threshold and fires (the rest stay quiet).
FIRING_EVERY = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rules", type=int, default=100, help="sql rules per tenant")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in total")
    parser.add_argument("--audit", type=int, default=100_000, help="audit rows in total")
    parser.add_argument("--storm", type=int, default=10_000, help="instances of the storm")
    parser.add_argument("--celery-concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--skip-celery", action="store_true", help="in-process passes only")


def prepare(args: argparse.Namespace) -> list[int]:
    from django.db import connection

    from alerts.models import AlertRule
    from tenants.models import Tenant

    Tenant.objects.bulk_create(
        [Tenant(slug=f"bench-{i:04d}", name=f"Bench {i}") for i in range(args.tenants)]
    )
    ids = list(Tenant.objects.order_by("pk").values_list("pk", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO events_event (tenant_id, timestamp, service_id, event_type, severity,
                message, attributes, correlation_id, trace_id, ingested_at, size_bytes)
            SELECT (%(ids)s::bigint[])[1 + g %% %(n)s],
                   now() - random() * interval '60 minutes',
                   'svc-' || ((g / %(n)s) %% 20),
                   (ARRAY['log', 'metric', 'error', 'log', 'deploy'])[1 + (g / %(n)s) %% 5],
                   (ARRAY['info', 'info', 'error', 'info', 'info'])[1 + (g / %(n)s) %% 5],
                   'bench event', '{}'::jsonb, '', '', now(), 200
            FROM generate_series(1, %(events)s) AS g
            """,
            {"ids": ids, "n": len(ids), "events": args.events},
        )
        cursor.execute(
            """
            INSERT INTO tenants_auditevent (tenant_id, timestamp, actor, action, ip_address,
                method, result, details)
            SELECT (%(ids)s::bigint[])[1 + g %% %(n)s],
                   now() - random() * interval '30 minutes',
                   'user' || ((g / %(n)s) %% 50),
                   CASE WHEN (g / %(n)s) %% 10 = 0 THEN 'security.permission_denied'
                        ELSE 'auth.login' END,
                   ('10.0.' || ((g / %(n)s) %% 5) || '.' || ((g / %(n)s) %% 250))::inet,
                   'jwt',
                   CASE WHEN (g / %(n)s) %% 3 = 0 THEN 'failure' ELSE 'success' END,
                   '{}'::jsonb
            FROM generate_series(1, %(audit)s) AS g
            """,
            {"ids": ids, "n": len(ids), "audit": args.audit},
        )
        cursor.execute("ANALYZE events_event")
        cursor.execute("ANALYZE tenants_auditevent")
    rules = []
    for tenant_id in ids:
        for i in range(args.rules):
            template = TEMPLATES[i % len(TEMPLATES)]
            firing = i % FIRING_EVERY == 0
            rules.append(
                AlertRule(
                    tenant_id=tenant_id,
                    name=f"rule_{i:04d}",
                    query=template.format(m=1 + (i // len(TEMPLATES)) % 20),
                    condition_operator=">",
                    threshold=0 if firing else 1_000_000,
                    evaluation_interval=60_000,
                )
            )
    AlertRule.objects.bulk_create(rules, batch_size=2_000)
    return ids


def vacuum_rules() -> None:
    """What autovacuum does between passes in production. This machine's PostgreSQL runs
    without it: a pass updates every rule twice (claim, outcome), and without a vacuum
    the rule table carries every earlier pass's dead rows through each lookup."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) alerts_alertrule, alerts_alertinstance")


def in_process_pass(label: str) -> tuple[str, int, float, float, float]:
    from django.utils import timezone

    from alerts.evaluation.runner import evaluate_rules
    from alerts.models import AlertRule
    from alerts.tasks import run_tick

    AlertRule.objects.update(next_evaluation_at=None)
    vacuum_rules()
    now = timezone.now()
    batches: list[list[int]] = []
    started = time.perf_counter()
    claimed = run_tick(
        now, enqueue=lambda tenant, batch: batches.append([d.rule_id for d in batch])
    )
    claim_seconds = time.perf_counter() - started
    started = time.perf_counter()
    query_seconds = 0.0
    for ids in batches:
        query_seconds += sum(o.query_seconds for o in evaluate_rules(ids, now=now))
    return label, len(claimed), claim_seconds, time.perf_counter() - started, query_seconds


def wait_until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def start_worker(concurrency: int, log) -> subprocess.Popen:
    env = support.app_env(CELERY_BROKER_URL=support.redis_url(), LOG_LEVEL="INFO")
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "traversion_site", "worker",
            "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--without-mingle", "--without-gossip",
        ],
        cwd=support.BASE_DIR, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop_worker(worker: subprocess.Popen) -> None:
    import os
    import signal

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


def celery_pass(total: int, on_start=None) -> tuple[int, float]:
    """(rules claimed, seconds) of one pass on the worker; `on_start()` runs right before
    the tick (after the reset and the vacuum)."""
    from django.utils import timezone

    from alerts.models import AlertRule
    from alerts.tasks import run_tick

    AlertRule.objects.update(next_evaluation_at=None)
    vacuum_rules()
    if on_start is not None:
        on_start()
    now = timezone.now()
    started = time.monotonic()
    claimed = run_tick(now)
    done = AlertRule.objects.filter(last_evaluated_at__gte=now)
    wait_until(lambda: done.count() >= total, 900, "the worker's pass")
    return len(claimed), time.monotonic() - started


class Receiver:
    """A local webhook endpoint counting the messages (and alerts) it gets."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    receiver.messages.append(json.loads(body))
                except ValueError:
                    receiver.messages.append({})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def storm(size: int, receiver: Receiver | None) -> list[tuple[str, str]]:
    from django.db.models import Count

    from alerts.evaluation.runner import evaluate_rules
    from alerts.models import (
        AlertEvent,
        AlertInstance,
        AlertRule,
        Notification,
        NotificationChannel,
    )
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="storm", name="Storm")
    url = receiver.url if receiver else "http://127.0.0.1:9"
    channels = [
        NotificationChannel.objects.create(
            tenant=tenant, name=f"hook-{i}", type="webhook", config={"url": f"{url}/hook-{i}"}
        )
        for i in range(2)
    ]
    rule = AlertRule.objects.create(
        tenant=tenant,
        name="storm",
        query=f"SELECT 'host-' || g AS host, 1 AS value FROM generate_series(1, {size}) AS g",
        evaluation_interval=3_600_000,
    )
    rule.channels.set(channels)
    started = time.perf_counter()
    (outcome,) = evaluate_rules([rule.pk])
    recorded = time.perf_counter() - started
    rows = Notification.objects.filter(event__rule=rule)
    groups = rows.values("channel__name").annotate(groups=Count("group_key", distinct=True))
    result = [
        ("storm: instances firing", f"{AlertInstance.objects.filter(rule=rule, state='firing').count():,}"),
        ("storm: history events", f"{AlertEvent.objects.filter(rule=rule).count():,}"),
        ("storm: ledger rows", f"{rows.count():,}"),
        ("storm: groups per channel", ", ".join(f"{g['channel__name']} {g['groups']}" for g in groups)),
        ("storm: recorded in", f"{recorded:.2f} s ({size / recorded:,.0f} instances/s)"),
    ]  # fmt: skip
    assert outcome.result == "firing"
    if receiver is not None:
        pending = rows.filter(status__in=["queued", "sending"])
        delivered = wait_until(lambda: not pending.exists(), 600, "delivery of the storm")
        statuses = dict(rows.values_list("status").annotate(n=Count("pk")))
        alerts = sum(len(m.get("alerts", [])) for m in receiver.messages)
        result += [
            ("storm: ledger after delivery", ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))),
            ("storm: webhook messages received", f"{len(receiver.messages)} ({alerts:,} alerts listed)"),
            ("storm: delivered within", f"{delivered:.2f} s after recording"),
        ]  # fmt: skip
    return result


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile

    support.fresh_database()
    support.setup_django(CELERY_BROKER_URL=support.redis_url())
    started = time.monotonic()
    prepare(args)
    total = args.tenants * args.rules
    print(
        f"prepared {args.tenants} tenants x {args.rules} rules = {total:,} rules, "
        f"{args.events:,} events, {args.audit:,} audit rows in {time.monotonic() - started:.1f} s "
        f"({os.cpu_count()} cores)",
        flush=True,
    )
    rows = []
    for label in ("in process, cold", "in process, warm"):
        label, claimed, claim_s, eval_s, query_s = in_process_pass(label)
        rows.append(
            (label, claimed, f"{claim_s:.2f}", f"{eval_s:.2f}", f"{query_s:.2f}",
             f"{claimed / eval_s:,.0f}")
        )  # fmt: skip
    receiver = None
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)
    worker = None
    if not args.skip_celery:
        import redis

        redis.Redis.from_url(support.redis_url()).delete("celery")
        worker = start_worker(args.celery_concurrency, log)
        try:
            wait_until(lambda: b" ready." in open(log.name, "rb").read(), 120, "the worker")
            for label in ("Celery, cold", "Celery, warm"):
                claimed, seconds = celery_pass(total)
                rows.append(
                    (f"{label} ({args.celery_concurrency} processes)", claimed, "-",
                     f"{seconds:.2f}", "-", f"{claimed / seconds:,.0f}")
                )  # fmt: skip
            receiver = Receiver()
            storm_rows = storm(args.storm, receiver)
        finally:
            stop_worker(worker)
    else:
        storm_rows = storm(args.storm, None)
    print()
    support.print_table(
        ["pass", "rules", "claim s", "evaluate s", "of which SQL s", "rules/s"], rows
    )
    print()
    support.print_table(["alert storm", "figure"], storm_rows)
    return 0
