"""Storage metrics: query durations by operation, connections, per-tenant quota.

One database execute wrapper (Django's documented `connection.execute_wrappers` hook)
times every statement once and feeds:

- `traversion_storage_operation_duration_seconds` by statement kind;
- django-prometheus's `django_db_execute_total`, `django_db_execute_many_total` and
  `django_db_errors_total` (its own metric objects, same names and labels).

django-prometheus's `django_db_query_duration_seconds` is left out (unregistered, never
fed): with one database it is the same histogram as the storage one without the
statement kind, and would cost two more memory-mapped writes per statement.

The database ENGINE settings.py selects when metrics are on (`metrics.backends.*`) is
Django's own backend with `DatabaseMetricsMixin`, which counts new connections
(`django_db_new_connections_total`, `django_db_new_connection_errors_total`) and installs
the wrapper. It replaces django-prometheus's backend wrappers, which built a new cursor
class for every connection (every request under ASGI with `DATABASE_CONN_MAX_AGE=0`) and
went through prometheus_client's label lookup and a timer object for every statement, in
a second wrapper layer next to this one (docs/BENCHMARKS.md, "Request overhead").
"""

from __future__ import annotations

from time import perf_counter

from django.db import connections
from django.db.backends.signals import connection_created
from django_prometheus.db import (
    connection_errors_total,
    connections_total,
    errors_total,
    execute_many_total,
    execute_total,
    query_duration_seconds,
)
from prometheus_client import REGISTRY

from .catalogue import STORAGE_OPERATION_DURATION
from .collectors import interval_cached, scrape_gauge
from .labels import tenant_label

OPERATIONS = ("select", "insert", "update", "delete")
OTHER_OPERATION = "other"
_children = {op: STORAGE_OPERATION_DURATION.labels(op) for op in (*OPERATIONS, OTHER_OPERATION)}
# Per connection alias: the django_db_* children (new connections, executes, bulk executes).
_database_children: dict[str, tuple] = {}

try:
    REGISTRY.unregister(query_duration_seconds)
except KeyError:  # already done (module reloaded)
    pass


def operation_of(sql) -> str:
    """The statement kind from its first word; anything else (DDL, savepoints) is `other`."""
    if not isinstance(sql, str):
        return OTHER_OPERATION
    head = sql[:16].lstrip()[:6].lower()
    return head if head in _children else OTHER_OPERATION


def database_children(connection) -> tuple:
    """(new connections, executes, bulk executes) children of a connection's alias."""
    children = _database_children.get(connection.alias)
    if children is None:
        labels = (connection.alias, connection.vendor)
        children = _database_children[connection.alias] = (
            connections_total.labels(*labels),
            execute_total.labels(*labels),
            execute_many_total.labels(*labels),
        )
    return children


def _statement_count(params) -> int:
    try:
        return len(params)
    except TypeError:  # a generator of parameter sets: counted as one execution
        return 1


def observe_statement(execute, sql, params, many, context):
    """Execute wrapper: time the statement, whatever happens to it."""
    started = perf_counter()
    try:
        return execute(sql, params, many, context)
    except Exception as exc:
        connection = context["connection"]
        errors_total.labels(connection.alias, connection.vendor, type(exc).__name__).inc()
        raise
    finally:
        _children[operation_of(sql)].observe(perf_counter() - started)
        _, executes, executes_many = database_children(context["connection"])
        if many:
            count = _statement_count(params)
            executes.inc(count)
            executes_many.inc(count)
        else:
            executes.inc()


def install_execute_wrapper(sender, connection, **kwargs) -> None:
    # The wrapper list belongs to the DatabaseWrapper, which outlives reconnections
    # (CONN_MAX_AGE, health checks): add ours once.
    if observe_statement not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, observe_statement)


class DatabaseMetricsMixin:
    """For a Django DatabaseWrapper: count new connections, wrap every statement."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        install_execute_wrapper(None, self)

    def get_new_connection(self, conn_params):
        database_children(self)[0].inc()
        try:
            return super().get_new_connection(conn_params)
        except Exception:
            connection_errors_total.labels(self.alias, self.vendor).inc()
            raise


def connect_signals() -> None:
    # A connection of another ENGINE than metrics.backends.* gets the wrapper too.
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
