"""Storage metrics: query durations by operation, connections, per-tenant quota.

`traversion_storage_operation_duration_seconds` is fed by a database execute wrapper
(Django's documented `connection.execute_wrappers` hook), installed on every new
connection through the `connection_created` signal. It sits next to django-prometheus's
backend wrapper (`django_db_*` families, the ENGINE settings.py selects), which knows
nothing of the statement kind.
"""

from __future__ import annotations

from time import perf_counter

from django.db import connections
from django.db.backends.signals import connection_created

from .catalogue import STORAGE_OPERATION_DURATION
from .collectors import interval_cached, scrape_gauge
from .labels import tenant_label

OPERATIONS = ("select", "insert", "update", "delete")
OTHER_OPERATION = "other"
_children = {op: STORAGE_OPERATION_DURATION.labels(op) for op in (*OPERATIONS, OTHER_OPERATION)}


def operation_of(sql) -> str:
    """The statement kind from its first word; anything else (DDL, savepoints) is `other`."""
    if not isinstance(sql, str):
        return OTHER_OPERATION
    head = sql[:16].lstrip()[:6].lower()
    return head if head in _children else OTHER_OPERATION


def observe_statement(execute, sql, params, many, context):
    """Execute wrapper: time the statement, whatever happens to it."""
    started = perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        _children[operation_of(sql)].observe(perf_counter() - started)


def install_execute_wrapper(sender, connection, **kwargs) -> None:
    # The wrapper list belongs to the DatabaseWrapper, which outlives reconnections
    # (CONN_MAX_AGE, health checks): add ours once.
    if observe_statement not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, observe_statement)


def connect_signals() -> None:
    connection_created.connect(install_execute_wrapper, dispatch_uid="metrics.storage.wrapper")
    # Connections opened before this app was ready (none in practice) get it too.
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            install_execute_wrapper(None, conn)


# --- scrape-time gauges ----------------------------------------------------------------


@interval_cached
def connection_counts() -> tuple[int, int]:
    """(active, idle) server connections to our database, this scrape's own excluded.

    SQLite has no server and no pool: the process that serves the scrape holds the only
    connection that matters, reported as one active and none idle.
    """
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return 1, 0
    with connection.cursor() as cursor:
        # Statistics views are snapshotted once per transaction: inside one (a test, an
        # atomic request) a second scrape would see the first one's numbers.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FILTER (WHERE state = 'active'),"
            " count(*) FILTER (WHERE state IN"
            " ('idle', 'idle in transaction', 'idle in transaction (aborted)'))"
            " FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        active, idle = cursor.fetchone()
    return int(active), int(idle)


@scrape_gauge(
    "traversion_storage_connections_active",
    "Database connections running a statement (PostgreSQL pg_stat_activity; SQLite: 1).",
)
def storage_connections_active():
    return [((), connection_counts()[0])]


@scrape_gauge(
    "traversion_storage_connections_idle",
    "Open database connections waiting for work (PostgreSQL pg_stat_activity; SQLite: 0).",
)
def storage_connections_idle():
    return [((), connection_counts()[1])]


@scrape_gauge(
    "traversion_tenant_storage_quota_bytes",
    "Storage quota of each active tenant, in bytes.",
    ["tenant_id"],
)
def tenant_storage_quota():
    from tenants.models import Tenant

    rows = Tenant.objects.filter(is_active=True).values_list("pk", "storage_quota_bytes")
    return [((tenant_label(pk),), quota) for pk, quota in rows]
