"""Detection-to-notification latency: an event makes a sql rule fire, until Slack gets it.

On a fresh database, a real Celery worker and beat on Redis run the alert engine as
`make run` does. One tenant has one sql rule over the `events` view ("the latest probe
event says down") and one Slack channel whose webhook is a local HTTP server. Each
trial inserts a `down` probe event (`--via api`: POST /api/v1/events to a gunicorn
server, the production path; `--via orm`: an ORM insert, which only the tick sees)
and times, from the moment the POST (or INSERT) is sent, until the
receiver gets the `[FIRING…]` POST; then inserts an `up` event (each trial has a probe of
its own, so one instance does not flap) and times until the
`[RESOLVED…]` POST. A random pause before each insert (--pause, 1.05 to 1.45 s) spreads
the inserts over the tick's phase and keeps them out of each other's debounce window. Reports p50/p95/max for firing and resolve.

Latency = waiting for the rule's next slot (evaluation interval, checked every tick)
+ evaluation + ALERT_GROUP_WAIT + delivery; with eager evaluation (`--eager`, the
default, ALERT_EAGER_EVALUATION) ingestion sends the rule to the worker at once and
the wait for the slot goes away. The defaults below are the engine tuned
the way the Prometheus figure of issue 10 is (1 s evaluation, group wait 0).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import _support as support

#: The latest probe event of each probe says down. Every trial uses a probe of its own:
#: one instance going up and down 100 times would (rightly) be reported as flapping.
RULE_QUERY = (
    "SELECT DISTINCT ON (service_id) service_id, "
    "CASE WHEN message = 'down' THEN 1 ELSE 0 END AS value FROM events "
    "WHERE event_type = 'probe' AND timestamp > now() - interval '1 hour' "
    "ORDER BY service_id, timestamp DESC"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=100, help="fire/resolve cycles")
    parser.add_argument(
        "--interval-ms", type=int, default=1_000, help="the rule's evaluation interval"
    )
    parser.add_argument("--tick-seconds", type=float, default=0.25, help="ALERT_TICK_SECONDS")
    parser.add_argument("--group-wait-ms", type=int, default=0, help="ALERT_GROUP_WAIT")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for one notification"
    )
    parser.add_argument(
        "--pause",
        type=float,
        nargs=2,
        default=(1.05, 1.45),
        metavar=("MIN", "MAX"),
        help="random pause (s) before each insert; above ALERT_EAGER_DEBOUNCE_SECONDS so "
        "every insert is a condition change of its own, not part of a debounced burst",
    )
    parser.add_argument(
        "--via",
        choices=["api", "orm"],
        default="api",
        help="insert the probe events with POST /api/v1/events (gunicorn) or the ORM",
    )
    parser.add_argument(
        "--eager",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ALERT_EAGER_EVALUATION: evaluate rules reading `events` on ingestion (api only)",
    )


class SlackReceiver:
    """A local Slack incoming-webhook endpoint: records (arrival time, text) per POST."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []
        self.condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.monotonic()
                try:
                    text = json.loads(body).get("text", "")
                except ValueError:
                    text = ""
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver.condition:
                    receiver.arrivals.append((arrived, text))
                    receiver.condition.notify_all()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, prefix: str, after: int, sent: float, timeout: float) -> tuple[float, int]:
        """Arrival time of the first POST from index `after`, not before `sent`, whose text
        starts with prefix; and the index to look from next time."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                for index in range(after, len(self.arrivals)):
                    arrived, text = self.arrivals[index]
                    if text.startswith(prefix) and arrived >= sent:
                        return arrived, index + 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {prefix} notification within {timeout} s")
                self.condition.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_celery(kind: str, args: argparse.Namespace, log, workdir: str) -> subprocess.Popen:
    env = support.app_env(
        CELERY_BROKER_URL=support.redis_url(),
        ALERT_TICK_SECONDS=str(args.tick_seconds),
        ALERT_GROUP_WAIT=str(args.group_wait_ms),
        ALERT_EAGER_EVALUATION=str(args.eager).lower(),
        LOG_LEVEL="INFO",
    )
    command = [sys.executable, "-m", "celery", "-A", "traversion_site", kind, "--loglevel", "INFO"]
    if kind == "worker":
        command += ["--concurrency", str(args.concurrency), "--without-mingle", "--without-gossip"]
    else:
        command += ["--schedule", os.path.join(workdir, "celerybeat-schedule")]
    return subprocess.Popen(
        command,
        cwd=support.BASE_DIR,
        env=env,
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def prepare(receiver: SlackReceiver, interval_ms: int):
    from alerts.models import AlertRule, NotificationChannel
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="latency", name="Latency")
    channel = NotificationChannel.objects.create(
        tenant=tenant,
        name="slack",
        type="slack",
        config={"webhook_url": receiver.url},
        send_resolved=True,
    )
    rule = AlertRule.objects.create(
        tenant=tenant,
        name="probe down",
        query=RULE_QUERY,
        condition_operator=">",
        threshold=0,
        evaluation_interval=interval_ms,
        # No repeat notifications while a probe is down: every POST is a transition.
        cooldown=3_600_000,
    )
    rule.channels.set([channel])
    return tenant, rule


class OrmInserter:
    """Inserts probe events with the ORM (autocommit: visible once create() returns)."""

    def __init__(self, tenant) -> None:
        self.tenant = tenant

    def __call__(self, probe: str, state: str) -> float:
        """Insert one probe event; returns the monotonic time the insert started."""
        from django.utils import timezone

        from events.models import Event

        started = time.monotonic()
        Event.objects.create(
            tenant=self.tenant,
            timestamp=timezone.now(),
            service_id=probe,
            event_type="probe",
            severity="error" if state == "down" else "info",
            message=state,
        )
        return started

    def close(self) -> None:
        pass


class ApiInserter:
    """POSTs probe events to /api/v1/events of a gunicorn server (one keep-alive client)."""

    def __init__(self, tenant, args: argparse.Namespace) -> None:
        from tenants.models import ApiKey

        _, key = ApiKey.issue(tenant, "latency")
        self.headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
        env = support.app_env(
            CELERY_BROKER_URL=support.redis_url(),
            ALERT_EAGER_EVALUATION=str(args.eager).lower(),
        )
        self.server = support.Server(env, workers=1, worker_class="sync").start()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)

    def __call__(self, probe: str, state: str) -> float:
        """POST one probe event; returns the monotonic time the request was sent."""
        from django.utils import timezone

        body = json.dumps(
            {
                "timestamp": timezone.now().isoformat(),
                "service_id": probe,
                "event_type": "probe",
                "severity": "error" if state == "down" else "info",
                "message": state,
            }
        )
        started = time.monotonic()
        self.conn.request("POST", "/api/v1/events", body=body, headers=self.headers)
        response = self.conn.getresponse()
        payload = response.read()
        if response.status >= 300:
            raise RuntimeError(f"POST /api/v1/events: {response.status} {payload[:300]!r}")
        if response.will_close:
            self.conn.close()
        return started

    def close(self) -> None:
        self.conn.close()
        self.server.stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def summarise(label: str, values: list[float]) -> tuple[str, ...]:
    return (
        label,
        str(len(values)),
        f"{statistics.median(values):.3f}",
        f"{percentile(values, 0.95):.3f}",
        f"{max(values):.3f}",
        f"{min(values):.3f}",
    )


def run(args: argparse.Namespace) -> int:
    import redis

    support.fresh_database()
    support.setup_django(CELERY_BROKER_URL=support.redis_url())
    redis.Redis.from_url(support.redis_url()).delete("celery", "unacked", "unacked_index")
    receiver = SlackReceiver()
    tenant, rule = prepare(receiver, args.interval_ms)
    workdir = tempfile.mkdtemp(prefix="bench-latency-")
    log = open(os.path.join(workdir, "celery.log"), "wb")
    processes = [start_celery("worker", args, log, workdir)]
    insert = None
    firing: list[float] = []
    resolving: list[float] = []
    try:
        deadline = time.monotonic() + 120
        while b" ready." not in open(log.name, "rb").read():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {log.name}")
            time.sleep(0.1)
        processes.append(start_celery("beat", args, log, workdir))
        insert = ApiInserter(tenant, args) if args.via == "api" else OrmInserter(tenant)
        # The rule is evaluated (ok, no probe yet) before the first trial starts.
        from alerts.models import AlertRule

        checked = AlertRule.objects.filter(pk=rule.pk, last_evaluated_at__isnull=False)
        while not checked.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the rule was never evaluated; see {log.name}")
            time.sleep(0.1)
        seen = 0
        rng = random.Random(10)
        for trial in range(args.trials):
            for state, prefix, into in (
                ("down", "[FIRING", firing),
                ("up", "[RESOLVED", resolving),
            ):
                time.sleep(rng.uniform(*args.pause))
                sent = insert(f"probe-{trial:04d}", state)
                arrived, seen = receiver.wait_for(prefix, seen, sent, args.timeout)
                into.append(arrived - sent)
            if (trial + 1) % 20 == 0:
                print(f"  {trial + 1} trials", flush=True)
    finally:
        if insert is not None:
            insert.close()
        for process in reversed(processes):
            stop(process)
        log.close()
        receiver.close()
    load = os.getloadavg()
    eager = (
        f"eager evaluation {'on' if args.eager else 'off'}" if args.via == "api" else "tick only"
    )
    print(
        f"\nevents via {args.via} ({eager}), rule interval {args.interval_ms} ms, tick {args.tick_seconds} s, group wait "
        f"{args.group_wait_ms} ms, {args.concurrency} worker processes, "
        f"load average {load[0]:.1f} / {load[1]:.1f} ({os.cpu_count()} cores)"
    )
    support.print_table(
        ["latency (s)", "trials", "p50", "p95", "max", "min"],
        [summarise("event -> firing POST", firing), summarise("event -> resolved POST", resolving)],
    )
    return 0
