"""Liveness and readiness.

`/healthz` says the process answers. `/readyz` says it can do its job: the database
answers, the broker accepts a connection, and beat has scheduled a heartbeat that a
worker ran recently. Anything down gives 503 with a JSON body naming it.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

HEARTBEAT_KEY = "traversion:heartbeat:last"


def record_heartbeat() -> float:
    now = time.time()
    # Kept well past the stale limit so /readyz can say how old it is.
    cache.set(HEARTBEAT_KEY, now, timeout=settings.HEARTBEAT_STALE_SECONDS * 100)
    return now


def last_heartbeat() -> float | None:
    return cache.get(HEARTBEAT_KEY)


def check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        return False, f"{type(exc).__name__}: {exc}"
    return True, connection.vendor


def check_broker() -> tuple[bool, str]:
    from traversion_site.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # any transport error means "not ready"
        return False, f"{type(exc).__name__}: {exc}"
    return True, app.conf.broker_url.split("://", 1)[0]


def check_beat() -> tuple[bool, str]:
    try:
        last = last_heartbeat()
    except Exception as exc:  # the cache itself is down
        return False, f"{type(exc).__name__}: {exc}"
    if last is None:
        return False, "no heartbeat recorded yet"
    age = time.time() - last
    if age > settings.HEARTBEAT_STALE_SECONDS:
        return False, f"last heartbeat {age:.0f}s ago"
    return True, f"last heartbeat {age:.1f}s ago"


CHECKS = {"database": check_database, "broker": check_broker, "beat": check_beat}


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    results = {name: check() for name, check in CHECKS.items()}
    down = sorted(name for name, (ok, _) in results.items() if not ok)
    body = {
        "status": "ok" if not down else "unavailable",
        "down": down,
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()},
    }
    return JsonResponse(body, status=200 if not down else 503)
