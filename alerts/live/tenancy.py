"""Which tenant a board viewer sees: the API's resolution, for pages and for sockets.

`tenants.scoping.resolve_tenant` reads a request (`META` for the X-Tenant header, `GET`
for ?tenant=, `user`, `auth`). The page and the snapshot pass their HttpRequest as is;
the socket passes a `HandshakeRequest` built from its ASGI scope, so the WebSocket picks
its tenant exactly like the REST API does (members choose among their tenants,
superusers may name any tenant, everyone else gets 404 for a foreign slug).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs

from tenants import audit
from tenants.choices import AuditAction
from tenants.scoping import (
    TENANT_HEADER,
    TenantContext,
    TenantSelectionError,
    resolve_tenant,
)


@dataclass
class HandshakeRequest:
    """The parts of a WebSocket handshake that tenant resolution and auditing read."""

    user: object
    path: str
    META: dict = field(default_factory=dict)
    GET: dict = field(default_factory=dict)
    #: Sockets authenticate by session only, never by API key.
    auth: None = None

    @classmethod
    def from_scope(cls, scope: dict) -> HandshakeRequest:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        get = {name: values[-1] for name, values in query.items() if values}
        meta: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            if raw_name.decode("latin-1").lower() == "x-tenant":
                meta[TENANT_HEADER] = raw_value.decode("latin-1")
        client = scope.get("client")
        if client:
            meta["REMOTE_ADDR"] = client[0]
        return cls(user=scope.get("user"), path=scope.get("path", ""), META=meta, GET=get)


def resolve_board_tenant(request) -> TenantContext:
    """resolve_tenant(), recording a foreign tenant slug as the API does (then re-raising)."""
    try:
        return resolve_tenant(request)
    except TenantSelectionError as exc:
        if exc.status == 404:
            audit.record(
                AuditAction.CROSS_TENANT,
                request=request,
                tenant=None,
                requested_tenant=exc.requested,
                path=request.path,
            )
        raise
