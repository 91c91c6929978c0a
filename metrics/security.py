"""Security metrics.

Counting rule: the security counters that have an audit event are fed from the one
place every audit event goes through, `tenants.audit.record()` -> `observe_audit_event`.
A login attempt, a cross-tenant request or a permission denial is therefore counted
exactly once whichever code path produced it (admin form, JWT obtain, API key, DRF
permission, tenant resolution), and the metric always agrees with the `audit_log` and
`auth_attempts` SQL views. What is not audited (a successful API-key request, a JWT
validation) is counted where it happens: `observe_api_key_use`, `observe_jwt_*`.

`traversion_auth_failures_by_ip_total` names at most `METRICS_AUTH_FAILURE_IPS` client
addresses and counts every other failure as `ip_address="other"`. Which addresses are
named is decided from the audit log, the one store every process shares: the top N
addresses by failed logins over the last hour, re-read at most once per
METRICS_COLLECTION_INTERVAL by each process. So every process names the same offenders
(within one interval), the named set cannot grow with the number of processes, and the
sum over all `ip_address` values is exactly the number of failures. A new attacker is
named from the next refresh on; what it did before is in `other`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from datetime import timedelta

from django.conf import settings

from . import catalogue
from .catalogue import (
    API_KEY_USAGE,
    AUDIT_EVENTS,
    AUTH_ATTEMPTS,
    AUTH_FAILURES_BY_IP,
    CROSS_TENANT_ACCESS_ATTEMPTS,
    JWT_EXPIRED,
    JWT_ISSUED,
    JWT_VALIDATED,
    PERMISSION_VIOLATIONS,
)
from .collectors import interval_cached, scrape_gauge
from .labels import NO_TENANT, OTHER_IP, tenant_label

logger = logging.getLogger(__name__)

#: Failed logins older than this no longer make an address a top offender.
FAILURE_RANKING_WINDOW = timedelta(hours=1)
#: `role` of a session whose user belongs to no tenant (operators).
NO_ROLE = "none"

# Audit action names (tenants.choices.AuditAction); copied as literals so this module
# imports nothing from an app at import time.
LOGIN = "auth.login"
CROSS_TENANT = "security.cross_tenant_access"
PERMISSION_DENIED = "security.permission_denied"
FAILURE = "failure"


class FailingIpRanking:
    """Which client addresses get their own `ip_address` label (see the module doc)."""

    def __init__(self) -> None:
        self._named: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def label_for(self, ip_address: str | None) -> str:
        if not ip_address:
            return OTHER_IP
        max_age = settings.METRICS_COLLECTION_INTERVAL / 1000
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= max_age:
                self._named = self.top_offenders(settings.METRICS_AUTH_FAILURE_IPS)
                self._read_at = now
            named = self._named
        return ip_address if ip_address in named else OTHER_IP

    @staticmethod
    def top_offenders(limit: int) -> frozenset[str]:
        from django.db.models import Count
        from django.utils import timezone

        from tenants.models import AuditEvent

        if limit <= 0:
            return frozenset()
        rows = (
            AuditEvent.objects.filter(
                action=LOGIN,
                result=FAILURE,
                timestamp__gte=timezone.now() - FAILURE_RANKING_WINDOW,
                ip_address__isnull=False,
            )
            .values("ip_address")
            .annotate(failures=Count("id"))
            .order_by("-failures", "ip_address")[:limit]
        )
        return frozenset(row["ip_address"] for row in rows)

    def forget(self) -> None:
        """Re-read the ranking at the next failure (tests, settings changes)."""
        with self._lock:
            self._read_at = float("-inf")


ranking = FailingIpRanking()


def observe_audit_event(event) -> None:
    """Count one recorded audit event in every family it belongs to."""
    if not catalogue.ENABLED:
        return
    try:
        tenant = tenant_label(event.tenant_id)
        action = event.action
        AUDIT_EVENTS.labels(tenant, action).inc()
        if action == LOGIN:
            AUTH_ATTEMPTS.labels(tenant, event.method, event.result).inc()
            if event.result == FAILURE:
                AUTH_FAILURES_BY_IP.labels(ranking.label_for(event.ip_address)).inc()
        elif action == CROSS_TENANT:
            CROSS_TENANT_ACCESS_ATTEMPTS.labels(tenant).inc()
        elif action == PERMISSION_DENIED:
            PERMISSION_VIOLATIONS.labels(tenant).inc()
    except Exception:  # the audit row is written; a metric must never fail the request
        logger.exception("could not count audit event %s", event.action)


_api_key_usage: dict[object, object] = {}


def observe_api_key_use(key) -> None:
    # Once per API request: the child of each tenant is looked up once per process.
    child = _api_key_usage.get(key.tenant_id)
    if child is None:
        child = _api_key_usage[key.tenant_id] = API_KEY_USAGE.labels(tenant_label(key.tenant_id))
    child.inc()


def observe_jwt_issued() -> None:
    JWT_ISSUED.inc()


def observe_jwt_validated() -> None:
    JWT_VALIDATED.inc()


def observe_jwt_expired() -> None:
    JWT_EXPIRED.inc()


# --- sessions (scrape time) ------------------------------------------------------------


@interval_cached
def session_tallies() -> tuple[Tally, Tally]:
    """Unexpired database sessions, by tenant and by (tenant, role).

    Sessions are decoded (they are signed JSON) to find their user; a user who belongs
    to several tenants counts once in each. A session whose user has no membership
    (operators) counts under the empty tenant with role `none`. JWT clients have no
    session and are not counted. Computed at most once per METRICS_COLLECTION_INTERVAL.
    """
    from django.contrib.auth import SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from tenants.models import Membership

    by_tenant: Tally = Tally()
    by_role: Tally = Tally()
    if not issubclass(_session_store(), SessionStore):
        return by_tenant, by_role  # cache-only sessions cannot be enumerated
    store = SessionStore()
    users: Tally = Tally()
    for data in Session.objects.filter(expire_date__gt=timezone.now()).values_list(
        "session_data", flat=True
    ):
        user_id = store.decode(data).get(SESSION_KEY)
        if user_id is not None:
            users[str(user_id)] += 1
    if not users:
        return by_tenant, by_role
    memberships: dict[str, list[tuple[str, str]]] = {}
    for user_id, tenant_id, role in Membership.objects.filter(
        user_id__in=list(users), tenant__is_active=True
    ).values_list("user_id", "tenant_id", "role"):
        memberships.setdefault(str(user_id), []).append((tenant_label(tenant_id), role))
    for user_id, sessions in users.items():
        for tenant, role in memberships.get(user_id, [(NO_TENANT, NO_ROLE)]):
            by_tenant[tenant] += sessions
            by_role[(tenant, role)] += sessions
    return by_tenant, by_role


def _session_store():
    from importlib import import_module

    return import_module(settings.SESSION_ENGINE).SessionStore


@scrape_gauge(
    "traversion_active_sessions",
    "Unexpired login sessions by tenant (a user in two tenants counts in both).",
    ["tenant_id"],
)
def active_sessions():
    by_tenant, _ = session_tallies()
    return [((tenant,), count) for tenant, count in sorted(by_tenant.items())]


@scrape_gauge(
    "traversion_user_sessions_by_role",
    "Unexpired login sessions by tenant and the user's role in it.",
    ["tenant_id", "role"],
)
def user_sessions_by_role():
    _, by_role = session_tallies()
    return [(key, count) for key, count in sorted(by_role.items())]
