"""Recording audit events: the single entry point, so every event is counted the same way."""

from __future__ import annotations

import logging

from metrics.security import observe_audit_event

from .models import AuditEvent

logger = logging.getLogger(__name__)


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def actor_of(request) -> str:
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return user.get_username()


def record(
    action: str,
    *,
    request=None,
    tenant=None,
    actor: str | None = None,
    method: str = "",
    result: str = "",
    ip_address: str | None = None,
    **details,
) -> AuditEvent:
    event = AuditEvent.objects.create(
        tenant=tenant,
        actor=(actor if actor is not None else actor_of(request))[:150],
        action=action,
        ip_address=ip_address or client_ip(request),
        method=method,
        result=result,
        details=details,
    )
    logger.info("audit %s actor=%s tenant=%s %s", action, event.actor, tenant, result)
    # The security counters (audit events, auth attempts, failures by IP, cross-tenant
    # attempts, permission violations) are fed here, so each event counts exactly once.
    observe_audit_event(event)
    return event
