"""Login rate limiting: failed logins per client IP and per account, in the shared cache.

Every failed credential check (Django's `user_login_failed` signal, sent by the admin
login and by the JWT obtain view alike) adds one to two fixed-window counters: one for
the client IP and one for the account name. While either counter is at its limit, the
login views answer 429 with `Retry-After` *before* checking credentials, so a correct
password guessed during the block is refused too. Blocked attempts are recorded as
failed logins (reason `rate_limited`), so the brute-force and suspicious-IP rules keep
seeing an attack that goes on.

The counters live in the Django cache (Redis, or the file cache of the embedded default),
which every web process shares; nothing is kept in process memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse

from . import audit
from .choices import AuditAction, AuthMethod, AuthResult
from .signals import LOGIN_METHOD_ATTR, tenant_of, username_from

#: URL names of the views that check passwords: the admin login and the JWT obtain view.
LOGIN_VIEWS = {"admin:login": AuthMethod.SESSION, "token-obtain": AuthMethod.JWT}
RATE_LIMITED_REASON = "rate_limited"
_GENERATION_KEY = "login-rl:generation"


def per_ip_limit() -> int:
    return settings.LOGIN_RATE_LIMIT_PER_IP


def per_account_limit() -> int:
    return settings.LOGIN_RATE_LIMIT_PER_ACCOUNT


def window_seconds() -> int:
    return settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS


def _generation() -> int:
    return cache.get(_GENERATION_KEY) or 0


def _keys(scope: str, value: str) -> tuple[str, str]:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    base = f"login-rl:{_generation()}:{scope}:{digest}"
    return base + ":count", base + ":reset"


def _scopes(ip: str | None, username: str) -> list[tuple[str, str, int]]:
    scopes = []
    if ip:
        scopes.append(("ip", ip, per_ip_limit()))
    if username:
        # Account names are case-insensitive for an attacker's purposes.
        scopes.append(("account", username.strip().lower(), per_account_limit()))
    return scopes


def record_failure(ip: str | None, username: str) -> None:
    """Count one failed login against the IP and the account (fixed windows)."""
    window = window_seconds()
    now = time.time()
    for scope, value, _limit in _scopes(ip, username):
        count_key, reset_key = _keys(scope, value)
        # add() only sets a missing key: the first failure opens the window.
        cache.add(reset_key, now + window, timeout=window)
        cache.add(count_key, 0, timeout=window)
        try:
            cache.incr(count_key)
        except ValueError:  # the window expired between add() and incr()
            cache.set(count_key, 1, timeout=window)


@dataclass(frozen=True)
class Block:
    scope: str  # "ip" or "account"
    retry_after: int  # seconds


def blocked(ip: str | None, username: str) -> Block | None:
    """The longest block in force for this IP or account, or None."""
    now = time.time()
    found: Block | None = None
    for scope, value, limit in _scopes(ip, username):
        count_key, reset_key = _keys(scope, value)
        values = cache.get_many([count_key, reset_key])
        count, reset_at = values.get(count_key) or 0, values.get(reset_key)
        if count < limit or reset_at is None or reset_at <= now:
            continue
        retry_after = max(1, math.ceil(reset_at - now))
        if found is None or retry_after > found.retry_after:
            found = Block(scope, retry_after)
    return found


def reset_all() -> None:
    """Forget every counter at once (a new key generation; old keys expire on their own)."""
    cache.set(_GENERATION_KEY, _generation() + 1, timeout=None)


def username_in(request) -> str:
    """The account name a login request names (form post or JSON body)."""
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return ""
        return username_from(data) if isinstance(data, dict) else ""
    return username_from(request.POST)


@receiver(user_login_failed, dispatch_uid="tenants.ratelimit_count_failure")
def count_login_failure(sender, credentials, request=None, **kwargs):
    if request is None:
        return
    record_failure(audit.client_ip(request), username_from(credentials))


class LoginRateLimitMiddleware:
    """Answers 429 with Retry-After to logins from a blocked IP or for a blocked account."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if request.method != "POST" or match is None or match.view_name not in LOGIN_VIEWS:
            return None
        username = username_in(request)
        block = blocked(audit.client_ip(request), username)
        if block is None:
            return None
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(username=username).first() if username else None
        audit.record(
            AuditAction.LOGIN,
            request=request,
            tenant=tenant_of(user),
            actor=username,
            method=getattr(request, LOGIN_METHOD_ATTR, LOGIN_VIEWS[match.view_name]),
            result=AuthResult.FAILURE,
            reason=RATE_LIMITED_REASON,
            blocked_by=block.scope,
        )
        message = (
            f"Too many failed login attempts from this {block.scope}; "
            f"try again in {block.retry_after} seconds."
        )
        if match.view_name == "admin:login":
            response = HttpResponse(message, status=429, content_type="text/plain")
        else:
            response = JsonResponse({"detail": message}, status=429)
        response["Retry-After"] = str(block.retry_after)
        return response
