"""Real traffic against a running Traversion, so that every metric family has samples.

Used by `manage.py generate_traffic` (and by the end-to-end dashboard test). Setup goes
through the ORM (tenants, users, API keys: the same code as the operator commands); every
thing measured goes over real HTTP (and one WebSocket) to the server and its workers:
health checks, JWT and session logins good and bad, an expired token, API-key calls, a
cross-tenant attempt, a permission denial, events with a scripted incident (deploy ->
errors -> alert, repeated so patterns are detected), root-cause walks, a SQL rule
evaluated every second with channels pointing at receivers started here, a silence, a
test firing, and an alert pushed the way Prometheus pushes them.

Everything is bounded: each request has a timeout, each wait a deadline, and the whole run
a budget (default 150 s), so it ends on its own. An endpoint answering 404 is reported as
missing and skipped (an error with --strict).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

REQUEST_TIMEOUT_SECONDS = 10
TENANT_A, TENANT_B = "traffic-a", "traffic-b"
RULE_NAME = "traffic_error_events"


class TrafficError(Exception):
    """The run cannot go on (server unreachable, setup impossible, strict mode miss)."""


class Receivers:
    """Local HTTP servers playing Slack, PagerDuty and a webhook receiver; they record POSTs."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                with receivers._lock:
                    receivers.received.append((self.path, body))
                answer = b"ok" if self.path.startswith("/slack") else b'{"status":"success"}'
                self.send_response(202 if self.path.startswith("/pagerduty") else 200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for path, _ in self.received if path.startswith(prefix))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Fixtures:
    """What setup made: credentials for tenant A (owner, viewer, keys) and tenant B."""

    owner: str
    viewer: str
    password: str
    member_key: str
    admin_key: str
    key_b: str


@dataclass
class Report:
    calls: dict[str, dict[int, int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def record(self, label: str, status: int) -> None:
        by_status = self.calls.setdefault(label, {})
        by_status[status] = by_status.get(status, 0) + 1


def setup_fixtures() -> Fixtures:
    """Tenants A and B, an owner and a viewer of A, an owner of B, fresh API keys."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from tenants.choices import Role
    from tenants.models import ApiKey, Membership, Tenant

    password = secrets.token_urlsafe(16)
    User = get_user_model()
    with transaction.atomic():
        tenant_a, _ = Tenant.objects.get_or_create(slug=TENANT_A, defaults={"name": "Traffic A"})
        tenant_b, _ = Tenant.objects.get_or_create(slug=TENANT_B, defaults={"name": "Traffic B"})
        users = {}
        for username, tenant, role in (
            ("traffic-owner", tenant_a, Role.OWNER),
            ("traffic-viewer", tenant_a, Role.VIEWER),
            ("traffic-owner-b", tenant_b, Role.OWNER),
        ):
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_active = True
            user.save()
            Membership.objects.update_or_create(user=user, tenant=tenant, defaults={"role": role})
            users[username] = user
        keys = {}
        for name, tenant, role in (
            ("traffic-member", tenant_a, Role.MEMBER),
            ("traffic-admin", tenant_a, Role.ADMIN),
            ("traffic-b", tenant_b, Role.MEMBER),
        ):
            for old in ApiKey.objects.for_tenant(tenant).active().filter(name=name):
                old.revoke()
            _, keys[name] = ApiKey.issue(tenant, name, role=role)
    return Fixtures(
        owner="traffic-owner",
        viewer="traffic-viewer",
        password=password,
        member_key=keys["traffic-member"],
        admin_key=keys["traffic-admin"],
        key_b=keys["traffic-b"],
    )


def expired_access_token(username: str) -> str:
    """A correctly signed access token that expired a minute ago (feeds jwt_expired)."""
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(get_user_model().objects.get(username=username))
    token.set_exp(from_time=datetime.now(UTC) - timedelta(hours=1), lifetime=timedelta(minutes=1))
    return str(token)


class TrafficRun:
    """One bounded run against base_url; `log` receives progress lines."""

    def __init__(
        self,
        base_url: str,
        *,
        budget_seconds: float = 150,
        strict: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.deadline = time.monotonic() + budget_seconds
        self.strict = strict
        self.log = log
        self.report = Report()
        self.http = requests.Session()
        self.receivers: Receivers | None = None
        self.websocket = None

    # --- plumbing ---------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def call(
        self,
        method: str,
        path: str,
        label: str,
        *,
        session: requests.Session | None = None,
        expect: tuple[int, ...] = (),
        **kwargs,
    ) -> requests.Response | None:
        """One request; 404 on an endpoint that should exist is reported as missing."""
        left = self.remaining()
        if left <= 0:  # a hanging server must not stretch the run past its budget
            raise TrafficError(f"time budget exhausted before {method} {path}")
        kwargs.setdefault("timeout", min(REQUEST_TIMEOUT_SECONDS, left))
        try:
            response = (session or self.http).request(method, self.base + path, **kwargs)
        except requests.RequestException as exc:
            self.report.problems.append(f"{label}: {type(exc).__name__}: {exc}")
            return None
        self.report.record(label, response.status_code)
        if response.status_code == 404 and 404 not in expect:
            self.missing(f"{method} {path.split('?')[0]} ({label})")
            return None
        if expect and response.status_code not in expect:
            self.report.problems.append(
                f"{label}: {method} {path} answered {response.status_code}, expected "
                f"{'/'.join(map(str, expect))}: {response.text[:200]}"
            )
        return response

    def missing(self, what: str) -> None:
        self.report.missing.append(what)
        self.log(f"WARNING: endpoint missing: {what}")

    def wait_for(self, what: str, predicate: Callable[[], bool], limit: float) -> bool:
        end = min(self.deadline, time.monotonic() + limit)
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.5)
        self.report.problems.append(f"gave up waiting for {what}")
        self.log(f"WARNING: gave up waiting for {what}")
        return False

    @staticmethod
    def api_key(key: str) -> dict[str, str]:
        return {"Authorization": f"Api-Key {key}"}

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    # --- the run --------------------------------------------------------------------------
    def run(self, fixtures: Fixtures) -> Report:
        self.check_server()
        self.receivers = Receivers()
        try:
            steps = [
                self.health,
                lambda: self.logins(fixtures),
                lambda: self.session_and_websocket(fixtures),
                lambda: self.api_keys(fixtures),
                lambda: self.cross_tenant_and_denial(fixtures),
                lambda: self.events(fixtures),
                lambda: self.alerting(fixtures),
                lambda: self.bad_logins(fixtures),
            ]
            for step in steps:
                step()
        finally:
            self.close()
        if self.strict and self.report.missing:
            raise TrafficError("missing endpoints: " + "; ".join(self.report.missing))
        return self.report

    def close(self) -> None:
        if self.websocket is not None:
            try:
                self.websocket.close()
            except Exception:  # the server may already have closed it; nothing to clean up
                pass
            self.websocket = None
        if self.receivers is not None:
            self.receivers.close()

    def check_server(self) -> None:
        try:
            requests.get(self.base + "/healthz", timeout=REQUEST_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            raise TrafficError(f"no Traversion server at {self.base}: {exc}") from exc

    def health(self) -> None:
        self.log("health checks and unauthenticated requests")
        for _ in range(5):
            self.call("GET", "/healthz", "healthz", expect=(200,))
            self.call("GET", "/readyz", "readyz", expect=(200, 503))
        self.call("GET", "/api/v1/tenants/", "anonymous", expect=(401, 403))
        self.call("GET", "/api/v1/no-such-endpoint/", "unknown route", expect=(404,))

    def logins(self, fixtures: Fixtures) -> None:
        self.log("JWT logins, refresh, validated and expired tokens")
        self.tokens: dict[str, dict] = {}
        answers = {}
        for username in (fixtures.owner, fixtures.viewer):
            response = self.call(
                "POST",
                "/api/v1/auth/token/",
                "jwt login",
                json={"username": username, "password": fixtures.password},
                expect=(200,),
            )
            answers[username] = "no answer" if response is None else response.text[:300]
            if response is not None and response.status_code == 200:
                self.tokens[username] = response.json()
        owner = self.tokens.get(fixtures.owner)
        if owner is None:
            raise TrafficError(
                f"the owner could not log in ({answers[fixtures.owner]}); nothing else can run"
            )
        self.call(
            "POST",
            "/api/v1/auth/token/refresh/",
            "jwt refresh",
            json={"refresh": owner["refresh"]},
            expect=(200,),
        )
        for _ in range(3):
            self.call(
                "GET",
                "/api/v1/tenants/",
                "jwt call",
                headers=self.bearer(owner["access"]),
                expect=(200,),
            )
        self.call(
            "GET",
            "/api/v1/tenants/",
            "expired jwt",
            headers=self.bearer(expired_access_token(fixtures.owner)),
            expect=(401,),
        )

    def session_and_websocket(self, fixtures: Fixtures) -> None:
        self.log("session login and the live board's WebSocket")
        browser = requests.Session()
        login = "/alerts/live/login/"
        page = self.call("GET", login, "session login page", session=browser, expect=(200,))
        if page is None:
            return
        response = self.call(
            "POST",
            login,
            "session login",
            session=browser,
            data={
                "username": fixtures.owner,
                "password": fixtures.password,
                "csrfmiddlewaretoken": browser.cookies.get("csrftoken", ""),
            },
            headers={"Referer": self.base + login},
            allow_redirects=False,
            expect=(302,),
        )
        if response is None or "sessionid" not in browser.cookies:
            self.report.problems.append("session login did not give a session cookie")
            return
        # The session is not logged out: it is what the active-session gauges count.
        self.call(
            "GET",
            f"/alerts/live/?tenant={TENANT_A}",
            "live board",
            session=browser,
            expect=(200,),
        )
        self.open_websocket(browser)

    def open_websocket(self, browser: requests.Session) -> None:
        from websockets.sync.client import connect

        parts = urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = f"{scheme}://{parts.netloc}/ws/alerts/live/?tenant={TENANT_A}"
        cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
        try:
            self.websocket = connect(
                url,
                additional_headers={"Cookie": cookie},
                origin=self.base,
                open_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            hello = json.loads(self.websocket.recv(timeout=REQUEST_TIMEOUT_SECONDS))
            self.websocket.send(json.dumps({"type": "ping"}))
            self.report.record("websocket", 101)
            self.log(f"  websocket open ({hello.get('type')})")
        except Exception as exc:  # any handshake or protocol failure is reported, not fatal
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 404:
                self.missing("WebSocket /ws/alerts/live/")
            else:
                self.report.problems.append(f"websocket: {type(exc).__name__}: {exc}")

    def api_keys(self, fixtures: Fixtures) -> None:
        self.log("API-key calls")
        for key in (fixtures.member_key, fixtures.admin_key, fixtures.key_b):
            self.call(
                "GET", "/api/v1/tenants/", "api key call", headers=self.api_key(key), expect=(200,)
            )
        self.call(
            "GET",
            "/api/v1/api-keys/",
            "api key list",
            headers=self.api_key(fixtures.admin_key),
            expect=(200,),
        )
        self.call(
            "GET",
            "/api/v1/tenants/",
            "revoked/unknown key",
            headers=self.api_key("trv_00000000_not-a-real-key"),
            expect=(401,),
        )

    def cross_tenant_and_denial(self, fixtures: Fixtures) -> None:
        self.log("cross-tenant attempts and permission denials")
        access = self.tokens[fixtures.owner]["access"]
        self.call(
            "GET",
            f"/api/v1/tenants/{TENANT_B}/",
            "cross-tenant tenant",
            headers=self.bearer(access),
            expect=(404,),
        )
        self.call(
            "GET",
            "/api/v1/rules/",
            "cross-tenant header",
            headers={**self.bearer(access), "X-Tenant": TENANT_B},
            expect=(404,),
        )
        viewer = self.tokens.get(fixtures.viewer)
        if viewer:
            self.call(
                "POST",
                "/api/v1/api-keys/",
                "viewer creates key (denied)",
                headers=self.bearer(viewer["access"]),
                json={"name": "nope"},
                expect=(403,),
            )
        self.call(
            "POST",
            "/api/v1/api-keys/",
            "member key creates key (denied)",
            headers=self.api_key(fixtures.member_key),
            json={"name": "nope"},
            expect=(403,),
        )

    # --- events -----------------------------------------------------------------------------
    def events(self, fixtures: Fixtures) -> None:
        self.log("events: scripted incidents, noise, an invalid event, queries, root causes")
        headers = self.api_key(fixtures.member_key)
        alert_ids: list[int] = []
        run = secrets.token_hex(3)
        for round_number in range(4):  # a (cause, effect, service) pair recurs: a pattern
            now = datetime.now(UTC)
            incident = f"incident-{run}-{round_number}"
            batch = [
                self.event(
                    now, "checkout", "deploy", "info", f"deploy v1.{round_number}", incident
                ),
                *[
                    self.event(
                        now + timedelta(seconds=1 + i),
                        "checkout",
                        "error",
                        "error",
                        f"HTTP 500 on /pay (round {round_number})",
                        incident,
                    )
                    for i in range(4)
                ],
                self.event(
                    now + timedelta(seconds=6),
                    "checkout",
                    "alert",
                    "critical",
                    "checkout error rate high",
                    incident,
                ),
                # Noise on other services, unrelated to the incident.
                self.event(now, "search", "log", "info", "reindex done"),
                self.event(now, "payments", "metric", "info", "latency sample"),
            ]
            response = self.call(
                "POST", "/api/v1/events", "ingest batch", headers=headers, json=batch, expect=(201,)
            )
            if response is None:
                return
            if response.status_code == 201:
                alert_ids.append(response.json()["ids"][5])
            time.sleep(0.5)
        # Errors of the last minutes: the anomaly score compares the last complete minute
        # with the half hour before it, so it needs errors in past minutes, not only now.
        now = datetime.now(UTC)
        history = [
            self.event(
                now - timedelta(minutes=minutes, seconds=i),
                "payments",
                "error",
                "error",
                f"timeout talking to the bank ({minutes} min ago)",
            )
            for minutes in (1, 2, 3, 5, 8)
            for i in range(minutes % 3 + 1)
        ]
        self.call(
            "POST", "/api/v1/events", "ingest history", headers=headers, json=history, expect=(201,)
        )
        self.call(
            "POST",
            "/api/v1/events",
            "invalid event",
            headers=headers,
            json={"service_id": "", "event_type": "", "timestamp": "not-a-time"},
            expect=(400,),
        )
        self.call(
            "POST",
            "/api/v1/events",
            "tenant B event",
            headers=self.api_key(fixtures.key_b),
            json=self.event(datetime.now(UTC), "billing", "error", "error", "B"),
            expect=(201,),
        )
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        for query in ({"service_id": "checkout", "since": since}, {"event_type": "error"}, {}):
            self.call(
                "GET", "/api/v1/events", "event query", headers=headers, params=query, expect=(200,)
            )
        for event_id in alert_ids[-2:]:
            path = f"/api/v1/events/{event_id}/root-cause"
            self.call(
                "GET", f"/api/v1/events/{event_id}", "event detail", headers=headers, expect=(200,)
            )

            def chain_found(path=path) -> bool:
                # Causes are linked by the worker after ingestion: poll until they are.
                response = self.call("GET", path, "root cause", headers=headers, expect=(200,))
                return (
                    response is not None
                    and response.status_code == 200
                    and response.json().get("chain_length", 0) >= 1
                )

            self.wait_for(f"a root-cause chain for event {event_id}", chain_found, 30)

    @staticmethod
    def event(
        when: datetime,
        service: str,
        event_type: str,
        severity: str,
        message: str,
        correlation_id: str = "",
    ) -> dict:
        event = {
            "timestamp": when.isoformat(),
            "service_id": service,
            "event_type": event_type,
            "severity": severity,
            "message": message,
            "attributes": {"source": "generate_traffic"},
        }
        if correlation_id:
            event["correlation_id"] = correlation_id
        return event

    # --- alerting -----------------------------------------------------------------------------
    def alerting(self, fixtures: Fixtures) -> None:
        self.log("alerting: channels to local receivers, a 1 s SQL rule, silence, test firing")
        assert self.receivers is not None
        headers = self.api_key(fixtures.admin_key)
        url = self.receivers.url
        channels = {
            "traffic-webhook": {
                "type": "webhook",
                "config": {"url": f"{url}/webhook", "secret": "traffic-secret"},
            },
            "traffic-slack": {"type": "slack", "config": {"webhook_url": f"{url}/slack/T/B/X"}},
            "traffic-pagerduty": {
                "type": "pagerduty",
                "config": {
                    "routing_key": "traffic-routing-key",
                    "api_url": f"{url}/pagerduty/v2/enqueue",
                },
            },
        }
        existing = self.call(
            "GET", "/api/v1/channels/?limit=500", "channel list", headers=headers, expect=(200,)
        )
        if existing is None:
            return
        by_name = {c["name"]: c for c in self.results(existing.json())}
        for name, body in channels.items():
            if name in by_name:
                self.call(
                    "PATCH",
                    f"/api/v1/channels/{by_name[name]['id']}/",
                    "channel update",
                    headers=headers,
                    json={"config": body["config"]},
                    expect=(200,),
                )
            else:
                self.call(
                    "POST",
                    "/api/v1/channels/",
                    "channel create",
                    headers=headers,
                    json={"name": name, **body},
                    expect=(201,),
                )
        rule = {
            "name": RULE_NAME,
            "severity": "warning",
            "description": "Error events exist for this tenant (traffic generator).",
            "datasource": "sql",
            "query": "SELECT count(*) AS value FROM events WHERE event_type = 'error'",
            "condition_operator": ">",
            "threshold": 0,
            "for_duration": 0,
            "cooldown": 0,
            "evaluation_interval": 1000,
            "channels": list(channels),
            "labels": {"team": "traffic"},
            "annotations": {"summary": "{{ value }} error events"},
            "enabled": True,
        }
        rules = self.call(
            "GET",
            f"/api/v1/rules/?limit=500&name={RULE_NAME}",
            "rule list",
            headers=headers,
            expect=(200,),
        )
        if rules is None:
            return
        found = [r for r in self.results(rules.json()) if r.get("name") == RULE_NAME]
        if found:
            saved = self.call(
                "PUT",
                f"/api/v1/rules/{found[0]['id']}/",
                "rule update",
                headers=headers,
                json=rule,
                expect=(200,),
            )
        else:
            saved = self.call(
                "POST", "/api/v1/rules/", "rule create", headers=headers, json=rule, expect=(201,)
            )
        rule_id = saved.json().get("id") if saved is not None and saved.ok else None
        self.call(
            "POST",
            "/api/v1/silences/",
            "silence create",
            headers=headers,
            json={
                "matchers": [{"name": "alertname", "op": "=", "value": "traffic_never_fires"}],
                "ends_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                "comment": "traffic generator: a silence that matches nothing",
            },
            expect=(201,),
        )
        before = self.receivers.count()
        self.wait_for(
            "the rule's notifications to reach the local receivers",
            lambda: self.receivers.count() > before,
            60,
        )
        self.call(
            "GET", "/api/v1/instances/?state=firing", "instances", headers=headers, expect=(200,)
        )
        self.call("GET", "/api/v1/history/", "history", headers=headers, expect=(200,))
        self.call("GET", "/api/v1/notifications/", "ledger", headers=headers, expect=(200,))
        sent_before_test = self.receivers.count()
        self.call(
            "POST",
            "/api/internal/alerts/test",
            "test firing",
            headers=headers,
            json={"ruleName": RULE_NAME, "testData": {"value": 7}},
            expect=(200,),
        )
        self.wait_for(
            "the test notifications", lambda: self.receivers.count() > sent_before_test, 30
        )
        self.push_prometheus_alert(fixtures)
        if rule_id is not None:
            # Back to the default pace: the rule keeps firing (the panels show it) without
            # costing an evaluation every second once the run is over.
            self.call(
                "PATCH",
                f"/api/v1/rules/{rule_id}/",
                "rule slowed down",
                headers=headers,
                json={"evaluation_interval": 60_000},
                expect=(200,),
            )
        self.log(f"  local receivers got {self.receivers.count()} notifications")

    def push_prometheus_alert(self, fixtures: Fixtures) -> None:
        """An alert as Prometheus posts it to an Alertmanager (API v2), with the key as bearer."""
        now = datetime.now(UTC)
        self.call(
            "POST",
            "/api/v2/alerts",
            "prometheus push",
            headers=self.bearer(fixtures.admin_key),
            json=[
                {
                    "labels": {
                        "alertname": "TrafficExternal",
                        "severity": "info",
                        "tenant": TENANT_A,
                    },
                    "annotations": {"summary": "pushed by the traffic generator"},
                    "startsAt": now.isoformat(),
                    "endsAt": (now + timedelta(minutes=5)).isoformat(),
                    "generatorURL": "http://prometheus.invalid/graph",
                }
            ],
            expect=(200,),
        )

    @staticmethod
    def results(body: Any) -> list[dict]:
        return body.get("results", []) if isinstance(body, dict) else list(body or [])

    def bad_logins(self, fixtures: Fixtures) -> None:
        # Last, so the login rate limit these trip cannot refuse the good logins above.
        self.log("failed logins (wrong password, unknown user, bad API key)")
        for username in (fixtures.viewer, "traffic-intruder", "traffic-intruder"):
            self.call(
                "POST",
                "/api/v1/auth/token/",
                "bad jwt login",
                json={"username": username, "password": "wrong-password"},
                expect=(401, 429),
            )
        self.call(
            "GET",
            "/api/v1/tenants/",
            "bad api key",
            headers=self.api_key("trv_deadbeef_wrong"),
            expect=(401,),
        )
