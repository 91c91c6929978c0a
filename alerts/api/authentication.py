"""Authentication of the alert receivers (/api/v2/alerts, /webhook/alerts).

Prometheus and Alertmanager cannot send our `Api-Key` header scheme, but both can send
`Authorization: Bearer <credentials>` (their `authorization` block) or HTTP basic auth.
So the receivers also accept a tenant API key as a bearer token or as the basic-auth
password (any user name), and the platform's own `ALERT_RECEIVER_TOKEN` as a bearer token
(or basic-auth password), which routes each alert by its `tenant` label.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from django.conf import settings
from rest_framework import authentication, exceptions

from tenants import audit
from tenants.api.authentication import ApiKeyUser
from tenants.choices import API_KEY_PREFIX, AuditAction, AuthMethod, AuthResult
from tenants.models import ApiKey, InvalidApiKey


class PlatformReceiver:
    """The platform's Prometheus/Alertmanager, authenticated by ALERT_RECEIVER_TOKEN."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None
    username = "alert-receiver"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


def credentials_of(header: str) -> tuple[str, str] | None:
    """(scheme, secret) from a Bearer or Basic Authorization header, else None."""
    scheme, _, raw = header.partition(" ")
    scheme, raw = scheme.lower(), raw.strip()
    if scheme == "bearer" and raw:
        return scheme, raw
    if scheme == "basic" and raw:
        try:
            decoded = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise exceptions.AuthenticationFailed("malformed basic credentials") from exc
        _user, _, password = decoded.partition(":")
        return scheme, password
    return None


class ReceiverAuthentication(authentication.BaseAuthentication):
    """Bearer or basic credentials carrying an API key or the platform receiver token."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        found = credentials_of(header)
        if found is None:
            return None
        scheme, secret = found
        token = settings.ALERT_RECEIVER_TOKEN
        if token and hmac.compare_digest(secret.encode(), token.encode()):
            return PlatformReceiver(), None
        if secret.startswith(f"{API_KEY_PREFIX}_"):
            try:
                key = ApiKey.authenticate(secret)
            except InvalidApiKey as exc:
                audit.record(
                    AuditAction.LOGIN,
                    request=request,
                    actor=secret.split("_", 2)[1][:16] if secret.count("_") >= 2 else "",
                    method=AuthMethod.API_KEY,
                    result=AuthResult.FAILURE,
                    reason=str(exc),
                )
                raise exceptions.AuthenticationFailed(str(exc)) from exc
            return ApiKeyUser(key), key
        if scheme == "bearer":
            return None  # perhaps a JWT: the next authenticator decides
        raise exceptions.AuthenticationFailed(
            "basic auth: the password must be an API key or the receiver token"
        )

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="traversion"'
