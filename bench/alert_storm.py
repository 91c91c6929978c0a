"""Alert storm: N instances start firing in one tick; grouped notifications, nothing lost.

On a fresh database: --tenants tenants, each with --rules sql rules whose query returns
--instances / (tenants x rules) rows (one instance per row, all above the threshold),
and two channels per tenant, a webhook and a Slack channel, both pointing at a local
HTTP receiver. A real Celery worker (--concurrency processes, on Redis) runs; one tick
(`alerts.tasks.run_tick`, what beat runs every ALERT_TICK_SECONDS) claims every rule and
fans the tenants' batches out to the worker. Timed from the tick:

- recorded: until every instance is firing and the ledger holds one row per instance
  and channel (instances x channels: nothing lost);
- delivered: until no ledger row is queued or sending; then the POSTs the receiver got
  per channel type (the grouped messages) and the alerts they list.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import _support as support
from . import evaluation as shared


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instances", type=int, default=10_000, help="instances in total")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--rules", type=int, default=10, help="rules per tenant")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds per phase")


class Receiver:
    """Local endpoint for both channel types: (path, body) of every POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {}
                with receiver.lock:
                    receiver.posts.append((self.path, payload))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prepare(args: argparse.Namespace, receiver: Receiver) -> tuple[int, int]:
    """Tenants, channels and rules; returns (instances, channels per instance)."""
    from alerts.models import AlertRule, NotificationChannel
    from tenants.models import Tenant

    per_rule = args.instances // (args.tenants * args.rules)
    if per_rule < 1:
        raise SystemExit("--instances must be at least --tenants x --rules")
    for t in range(args.tenants):
        tenant = Tenant.objects.create(slug=f"storm-{t:03d}", name=f"Storm {t}")
        channels = [
            NotificationChannel.objects.create(
                tenant=tenant,
                name="webhook",
                type="webhook",
                config={"url": f"{receiver.url}/webhook/{t}"},
            ),
            NotificationChannel.objects.create(
                tenant=tenant,
                name="slack",
                type="slack",
                config={"webhook_url": f"{receiver.url}/slack/{t}"},
            ),
        ]
        rules = AlertRule.objects.bulk_create(
            [
                AlertRule(
                    tenant=tenant,
                    name=f"storm_{r:03d}",
                    query=(
                        f"SELECT 'host-' || g AS host, 1 AS value "
                        f"FROM generate_series(1, {per_rule}) AS g"
                    ),
                    condition_operator=">",
                    threshold=0,
                    evaluation_interval=3_600_000,
                )
                for r in range(args.rules)
            ]
        )
        for rule in rules:
            rule.channels.set(channels)
    return per_rule * args.tenants * args.rules, 2


def run(args: argparse.Namespace) -> int:
    import redis
    from django.db.models import Count

    support.fresh_database()
    support.setup_django(CELERY_BROKER_URL=support.redis_url())
    redis.Redis.from_url(support.redis_url()).delete("celery", "unacked", "unacked_index")
    from alerts.models import AlertInstance, Notification
    from alerts.tasks import run_tick

    receiver = Receiver()
    instances, per_instance = prepare(args, receiver)
    expected = instances * per_instance
    log = tempfile.NamedTemporaryFile(prefix="bench-storm-worker-", suffix=".log", delete=False)
    worker = shared.start_worker(args.concurrency, log)
    try:
        shared.wait_until(lambda: b" ready." in open(log.name, "rb").read(), 120, "the worker")
        load = os.getloadavg()[0]
        started = time.monotonic()
        claimed = run_tick()
        firing = AlertInstance.objects.filter(state="firing")
        ledger = Notification.objects.all()
        shared.wait_until(
            lambda: firing.count() >= instances and ledger.count() >= expected,
            args.timeout,
            "the storm to be recorded",
        )
        recorded = time.monotonic() - started
        pending = ledger.filter(status__in=["queued", "sending"])
        shared.wait_until(lambda: not pending.exists(), args.timeout, "delivery of the storm")
        delivered = time.monotonic() - started
    finally:
        shared.stop_worker(worker)
    time.sleep(0.2)
    receiver.close()
    statuses = dict(ledger.values_list("status").annotate(n=Count("pk")))
    per_channel = dict(ledger.values_list("channel__type").annotate(n=Count("pk")))
    groups = dict(ledger.values_list("channel__type").annotate(n=Count("group_key", distinct=True)))
    posts = Counter(path.split("/")[1] for path, _ in receiver.posts)
    listed = sum(len(body.get("alerts", [])) for path, body in receiver.posts if "webhook" in path)
    rows = [
        ("rules claimed by the tick", f"{len(claimed):,}"),
        ("instances firing", f"{firing.count():,} (expected {instances:,})"),
        ("ledger rows", f"{ledger.count():,} (expected {expected:,} = instances x channels)"),
        ("ledger rows per channel type", ", ".join(f"{k} {v:,}" for k, v in sorted(per_channel.items()))),
        ("groups per channel type", ", ".join(f"{k} {v:,}" for k, v in sorted(groups.items()))),
        ("ledger after delivery", ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))),
        ("POSTs received", ", ".join(f"{k} {v:,}" for k, v in sorted(posts.items()))),
        ("alerts listed in webhook POSTs", f"{listed:,}"),
        ("load average before the tick", f"{load:.1f} ({os.cpu_count()} cores)"),
        ("recorded (tick -> all in the ledger)", f"{recorded:.2f} s ({instances / recorded:,.0f} instances/s)"),
        ("delivered (tick -> none queued)", f"{delivered:.2f} s"),
    ]  # fmt: skip
    print()
    support.print_table(["alert storm", "figure"], rows)
    lost = firing.count() != instances or ledger.count() != expected
    return 1 if lost else 0
