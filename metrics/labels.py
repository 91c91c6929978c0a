"""Label values shared by every producer, so one family never spells a tenant two ways."""

from __future__ import annotations

#: `tenant_id` when a sample belongs to no tenant (anonymous request, unknown user).
NO_TENANT = ""
#: `endpoint` of a request that matched no URL pattern (never the raw path).
UNMATCHED_ENDPOINT = "unmatched"
#: `ip_address` of failures from every client outside the named top offenders.
OTHER_IP = "other"
#: `method` of a request whose HTTP method is not a standard one.
OTHER_METHOD = "other"

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def tenant_label(tenant) -> str:
    """`tenant_id` label value: the tenant's primary key as text, as in the SQL views."""
    if tenant is None:
        return NO_TENANT
    pk = getattr(tenant, "pk", tenant)
    return NO_TENANT if pk is None else str(pk)
