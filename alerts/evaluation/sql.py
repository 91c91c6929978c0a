"""The `sql` datasource: SELECT queries over four tenant-scoped views, sandboxed.

A rule's query is parsed with sqlglot (PostgreSQL dialect) and checked on the tree, never
with regular expressions:

1. exactly one statement, and it is a query (SELECT, a set operation of SELECTs, CTEs);
   no data-modifying CTE, no SELECT INTO, no FOR UPDATE/SHARE, no recursive CTE, no
   query parameters;
2. every table is one of the public views (`events`, `causality`, `audit_log`,
   `auth_attempts`) or a CTE of the query; schema-qualified names and system catalogs
   are refused;
3. every function is on the allow-list (aggregates, date/time, math, string, JSON,
   window functions, generate_series/unnest); casts only to plain data types.

The tree is then rewritten: each view becomes a subquery over the real table, filtered
on the rule's tenant with a bound parameter (a global rule's views are not filtered, and
its result must carry `tenant_id`). The SQL sent to the database is generated from the
checked tree, without comments, and must re-parse to itself: what runs is exactly what
was checked.

Behind the parser stand two more walls: on PostgreSQL the queries run in a READ ONLY
(sub)transaction with `statement_timeout = ALERT_SQL_TIMEOUT_MS`, rolled back afterwards;
on SQLite (the embedded default) with `PRAGMA query_only` and a progress handler that
interrupts a query at the same timeout.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

import sqlglot
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from alerts.choices import Datasource as DatasourceChoice
from alerts.choices import RuleHealth

from .base import (
    MAX_LABEL_VALUE,
    Datasource,
    QueryError,
    Result,
    Sample,
    clean_label_name,
    clean_value,
    label_value,
)

if TYPE_CHECKING:
    from alerts.models import AlertRule

logger = logging.getLogger(__name__)

#: The public views: name -> SELECT over the real table (column names are a contract).
VIEWS: dict[str, str] = {
    "events": (
        "SELECT id, tenant_id, timestamp, service_id, event_type, severity, message, "
        "attributes AS data, correlation_id FROM events_event"
    ),
    "causality": (
        "SELECT id, tenant_id, cause_id, effect_id, causality_type, confidence, detected_at "
        "FROM events_causallink"
    ),
    "audit_log": (
        "SELECT id, tenant_id, timestamp, actor, action, ip_address, details "
        "FROM tenants_auditevent"
    ),
    "auth_attempts": (
        "SELECT id, tenant_id, timestamp, actor AS username, method, result, ip_address "
        "FROM tenants_auditevent WHERE action = 'auth.login'"
    ),
}
ALLOWED_VIEWS = ", ".join(VIEWS)
#: The column a shared scan of each view is bounded on (an index on (tenant_id, it)).
TIME_COLUMNS: dict[str, str] = {
    "events": "timestamp",
    "causality": "detected_at",
    "audit_log": "timestamp",
    "auth_attempts": "timestamp",
}

#: Functions sqlglot knows by name (its canonical name for them, lower case).
ALLOWED_FUNCTIONS = frozenset(
    {
        # aggregates
        "count", "sum", "avg", "min", "max", "stddev", "stddev_pop", "stddev_samp",
        "variance", "variance_pop", "array_agg", "group_concat", "logical_and",
        "logical_or", "percentile_cont", "percentile_disc", "mode",
        # math
        "abs", "ceil", "floor", "round", "trunc", "sqrt", "exp", "ln", "log", "sign",
        "greatest", "least",
        # null handling and conditionals
        "coalesce", "nullif", "case", "if", "exists", "cast",
        # date and time
        "current_timestamp", "current_date", "current_time", "localtimestamp",
        "timestamp_trunc", "date_trunc", "extract", "unix_to_time", "str_to_time",
        "time_to_str", "make_interval",
        # strings
        "lower", "upper", "length", "substring", "trim", "concat", "concat_ws", "replace",
        "split_part", "left", "right", "str_position", "starts_with", "md5",
        "regexp_replace", "initcap", "pad", "reverse",
        # window functions
        "row_number", "rank", "dense_rank", "lag", "lead", "first_value", "last_value",
        "ntile", "percent_rank", "cume_dist",
        # arrays and row generators
        "array", "array_size", "unnest", "generate_series", "exploding_generate_series",
        # other data functions
        "width_bucket", "to_number", "host",
    }
)  # fmt: skip
#: Functions sqlglot does not know (parsed as anonymous calls), by their SQL name.
ALLOWED_ANONYMOUS_FUNCTIONS = frozenset(
    {
        "every", "age", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
        "jsonb_extract_path_text", "json_extract_path_text", "jsonb_array_length",
        "json_array_length", "jsonb_typeof", "json_typeof", "cardinality", "masklen",
    }
)  # fmt: skip
#: Plain data types a value may be cast to (no regclass, no xml, no user types).
ALLOWED_TYPES = frozenset(
    getattr(exp.DataType.Type, name)
    for name in (
        "SMALLINT", "INT", "BIGINT", "DECIMAL", "DOUBLE", "FLOAT", "TEXT", "VARCHAR",
        "CHAR", "BPCHAR", "BOOLEAN", "DATE", "TIME", "TIMETZ", "TIMESTAMP", "TIMESTAMPTZ",
        "INTERVAL", "JSON", "JSONB", "INET", "UUID",
    )
)  # fmt: skip
#: Statement kinds that may not appear anywhere in a rule's query.
FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "DML", "DDL", "Command", "Drop", "Alter", "TruncateTable", "Grant", "Revoke", "Set",
        "Transaction", "Commit", "Rollback", "Pragma", "Use", "Copy", "Merge", "Create",
        "Insert", "Update", "Delete", "Cache", "Uncache", "Refresh", "LoadData", "Analyze",
        "Describe", "Kill", "Comment", "Declare", "Execute", "Show", "Attach", "Detach",
        "Install", "Export",
    )
    if hasattr(exp, name)
)  # fmt: skip
#: Operators sqlglot models as functions (->, ->>, ~, @>, ^...): harmless built-ins.
OPERATOR_NODES = (exp.Binary, exp.Connector)
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

MAX_QUERY_LENGTH = 20_000
#: A rule result is a set of alert instances, not a data export.
MAX_ROWS = 10_000
#: Reserved prefix of the names the rewrite introduces (refused in user queries).
RESERVED = "__trv"
TENANT_SENTINEL = "__trv_tenant__"
CTE_PREFIX = "__trv_cte_"
#: Name of the shared scan of a view (`__trv_scan_events`), see `SharedScan`.
SCAN_PREFIX = "__trv_scan_"
#: Rules per shared-scan statement (a failing statement is retried rule by rule).
SHARED_SCAN_CHUNK = 100
PARSE_DIALECT = "postgres"
DIALECTS = {"postgresql": "postgres", "sqlite": "sqlite"}


@dataclass(frozen=True)
class CompiledQuery:
    """SQL ready to run: `%(tenant)s` is the only parameter (absent for global rules).

    `shared_sql` is the same query reading the shared scans (`__trv_scan_<view>`) instead
    of the views, when every view it reads is bounded below in time by a constant of the
    statement (`timestamp > now() - interval '5 minutes'`); `bounds` are those
    constants, per view. None when the query cannot share a scan.
    """

    sql: str
    views: tuple[str, ...]
    tenant_scoped: bool
    shared_sql: str | None = None
    bounds: tuple[tuple[str, str], ...] = ()
    merge: Mergeable | None = None


@dataclass(frozen=True)
class Mergeable:
    """A one-view aggregate (`SELECT g..., agg(...) FROM view WHERE w GROUP BY g...`)
    that can be computed in the same pass over the view as other rules grouping by the
    same expressions: each of its aggregates gets `FILTER (WHERE w)`.

    `key` is (view, GROUP BY expressions); `items` are its output columns in order, each
    ("group", index into the GROUP BY) or ("value", SQL with the filter applied).
    """

    key: tuple[str, tuple[str, ...]]
    where: str
    items: tuple[tuple[str, int | str], ...]


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


def _statement_kind(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).split()[0].upper() if node.this else "COMMAND"
    if isinstance(node, exp.TruncateTable):
        return "TRUNCATE"
    return node.key.upper()


def parse_single_select(query: str) -> exp.Query:
    """The query's tree, or QueryError when it is not exactly one SELECT."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty")
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    if RESERVED in query.lower():
        raise QueryError(f"names starting with {RESERVED} are reserved")
    try:
        statements = [
            s
            for s in sqlglot.parse(query, read=PARSE_DIALECT)
            if s is not None and not isinstance(s, exp.Semicolon)  # empty statements
        ]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError(f"could not parse the query: {_first_line(exc)}") from exc
    except RecursionError as exc:
        raise QueryError("the query is nested too deeply") from exc
    if not statements:
        raise QueryError("the query is empty")
    if len(statements) > 1:
        kinds = ", ".join(_statement_kind(s) for s in statements)
        raise QueryError(
            f"exactly one SELECT statement is allowed; found {len(statements)} ({kinds})"
        )
    root = statements[0]
    if not isinstance(root, exp.Query):
        raise QueryError(
            f"only a SELECT query is allowed; this is a {_statement_kind(root)} statement"
        )
    return root


def _function_name(node: exp.Func) -> tuple[str, bool]:
    """(name as written for messages, allowed?)."""
    if isinstance(node, exp.Anonymous):
        name = str(node.name).lower()
        return name, name in ALLOWED_ANONYMOUS_FUNCTIONS
    name = node.sql_name().lower()
    return name, name in ALLOWED_FUNCTIONS


def check_tree(tree: exp.Query) -> None:
    """Refuse every construct outside the sandbox (see the module docstring)."""
    for node in tree.walk():
        if isinstance(node, FORBIDDEN_NODES):
            raise QueryError(
                f"{_statement_kind(node)} is not allowed: a rule's query may only read data"
            )
        if isinstance(node, exp.Into):
            raise QueryError("SELECT INTO is not allowed: a rule's query may only read data")
        if isinstance(node, exp.Lock):
            raise QueryError("locking clauses (FOR UPDATE / FOR SHARE) are not allowed")
        if isinstance(node, exp.Placeholder | exp.Parameter | exp.SessionParameter):
            raise QueryError("query parameters are not allowed; write the values in the query")
        if isinstance(node, exp.With) and node.args.get("recursive"):
            raise QueryError("recursive CTEs (WITH RECURSIVE) are not allowed")
        if isinstance(node, exp.ObjectIdentifier):
            raise QueryError(f"object identifier types ({node.sql()}) are not allowed")
        if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            raise QueryError(
                f"schema-qualified functions ({node.sql(PARSE_DIALECT)}) are not allowed"
            )
        if isinstance(node, exp.DataType) and node.this not in ALLOWED_TYPES:
            raise QueryError(
                f"type {node.sql(PARSE_DIALECT)} is not allowed; casts may only target "
                "numbers, text, booleans, dates and times, intervals, JSON, inet and uuid"
            )
        if isinstance(node, exp.Cast) and not isinstance(node.args.get("to"), exp.DataType):
            raise QueryError(f"cast to {node.args.get('to')} is not allowed")
        if isinstance(node, exp.Func) and not isinstance(node, OPERATOR_NODES):
            name, allowed = _function_name(node)
            if not allowed:
                raise QueryError(
                    f"function {name}() is not allowed; a rule may use aggregate, date/time, "
                    "math, string, JSON and window functions of the allow-list "
                    "(docs/alerting.md, SQL sandbox)"
                )


def _view_subquery(view: str, alias: exp.TableAlias, tenant_scoped: bool) -> exp.Subquery:
    select = sqlglot.parse_one(VIEWS[view], read=PARSE_DIALECT)
    if tenant_scoped:
        select = select.where(
            exp.EQ(this=exp.column("tenant_id"), expression=exp.column(TENANT_SENTINEL)),
            copy=False,
        )
    return exp.Subquery(this=select, alias=alias)


def _refuse_table(table: exp.Table) -> None:
    schema = (table.catalog + "." if table.catalog else "") + (table.db or "")
    name = table.name
    if schema or name.startswith("pg_") or name in SYSTEM_SCHEMAS:
        if schema.split(".")[-1] in SYSTEM_SCHEMAS or name.startswith("pg_"):
            raise QueryError(
                f"system catalogs ({schema + '.' if schema else ''}{name}) are not allowed; "
                f"allowed: {ALLOWED_VIEWS}"
            )
        raise QueryError(
            f"schema-qualified table {schema}.{name} is not allowed; allowed: {ALLOWED_VIEWS}"
        )
    raise QueryError(f"unknown table {name}; allowed: {ALLOWED_VIEWS}")


def rewrite_tables(
    tree: exp.Query,
    tenant_scoped: bool,
    replace_view: Callable[[str, exp.TableAlias], exp.Expression] | None = None,
) -> tuple[str, ...]:
    """Replace each view by its (tenant-filtered) subquery; rename CTEs out of the way.

    CTEs get a reserved prefix so that a reference the database would resolve to a real
    table (a CTE defined in another scope, or after its use) can only fail, never read it.
    `replace_view(view, alias)` gives what stands for a view instead of its subquery.
    """
    if replace_view is None:

        def replace_view(view: str, alias: exp.TableAlias) -> exp.Expression:
            return _view_subquery(view, alias, tenant_scoped)

    ctes = set()
    for cte in tree.find_all(exp.CTE):
        name = cte.alias_or_name
        ctes.add(name)
        cte.args["alias"].set("this", exp.to_identifier(CTE_PREFIX + name))
    views = []
    for table in list(tree.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function (generate_series...): checked as a function
        if table.db or table.catalog:
            _refuse_table(table)
        name = table.name
        alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier(name))
        if name in ctes:
            table.set("this", exp.to_identifier(CTE_PREFIX + name))
            table.set("alias", alias)
        elif name in VIEWS:
            views.append(name)
            table.replace(replace_view(name, alias))
        else:
            _refuse_table(table)
    return tuple(sorted(set(views)))


#: What a time bound may be built of: constants of the statement (its start time,
#: literals, intervals, arithmetic, truncation), never a column or a subquery.
BOUND_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "Literal", "Interval", "Var", "CurrentTimestamp", "CurrentDate", "Localtimestamp",
        "TimestampTrunc", "DateTrunc", "Sub", "Add", "Mul", "Neg", "Paren", "Cast",
        "DataType", "MakeInterval", "Kwarg",
    )
    if hasattr(exp, name)
)  # fmt: skip
#: Functions the parser leaves anonymous that return the statement's start time.
BOUND_FUNCTIONS = frozenset({"transaction_timestamp"})


def _conjuncts(node: exp.Expression) -> Iterator[exp.Expression]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _is_constant_bound(node: exp.Expression) -> bool:
    for child in node.walk():
        if isinstance(child, exp.Anonymous):
            if str(child.name).lower() not in BOUND_FUNCTIONS:
                return False
        elif not isinstance(child, BOUND_NODES):
            return False
    return True


def _time_bound(table: exp.Table) -> exp.Expression | None:
    """The constant X of a `time_column > X` (or >=) conjunct of the WHERE of the SELECT
    that reads `table` directly, or None when there is no such bound.

    Any row of the view below X fails that WHERE whatever the joins around it, so a scan
    of the view that starts at X (or earlier) gives the query the same result.
    """
    select = table.parent
    if not isinstance(select, exp.From | exp.Join):
        return None
    select = select.parent
    if not isinstance(select, exp.Select) or select.args.get("where") is None:
        return None
    sources = 1 + len(select.args.get("joins") or [])
    alias = table.alias_or_name
    column = TIME_COLUMNS[table.name]

    def is_time_column(node: exp.Expression) -> bool:
        if not isinstance(node, exp.Column) or node.name != column:
            return False
        return node.table == alias if node.table else sources == 1

    for conjunct in _conjuncts(select.args["where"].this):
        if isinstance(conjunct, exp.GT | exp.GTE) and is_time_column(conjunct.this):
            bound = conjunct.expression
        elif isinstance(conjunct, exp.LT | exp.LTE) and is_time_column(conjunct.expression):
            bound = conjunct.this
        else:
            continue
        if _is_constant_bound(bound):
            return bound
    return None


def _view_columns(view: str) -> frozenset[str]:
    return frozenset(
        e.alias_or_name for e in sqlglot.parse_one(VIEWS[view], read=PARSE_DIALECT).expressions
    )


VIEW_COLUMNS = {view: _view_columns(view) for view in VIEWS}
#: Constructs that keep a query out of a merged pass (it then shares a scan, or runs alone).
UNMERGEABLE = (
    exp.Subquery, exp.Select, exp.Window, exp.WithinGroup, exp.Filter, exp.Anonymous,
    exp.Placeholder, exp.Parameter,
)  # fmt: skip


def _render_part(node: exp.Expression) -> str:
    return node.sql(dialect=PARSE_DIALECT, comments=False, identify=True).replace("%", "%%")


def _mergeable(tree: exp.Query) -> Mergeable | None:
    """How `tree` joins a merged pass over its view, or None (see `Mergeable`)."""
    if not isinstance(tree, exp.Select) or tree.args.get("with") or tree.args.get("joins"):
        return None
    tree = tree.copy()
    for arg in ("distinct", "having", "order", "limit", "offset", "qualify", "windows"):
        if tree.args.get(arg):
            return None
    source = tree.args.get("from_") or tree.args.get("from")
    table = source.this if source is not None else None
    where = tree.args.get("where")
    if (
        not isinstance(table, exp.Table)
        or not isinstance(table.this, exp.Identifier)
        or table.name not in VIEWS
        or table.db
        or table.catalog
        or where is None
    ):
        return None
    columns = VIEW_COLUMNS[table.name]
    alias = table.alias_or_name
    for column in tree.find_all(exp.Column):
        if column.table and column.table != alias:
            return None
        if column.name not in columns:
            return None  # an output alias, or not a column of the view: keep it simple
        column.set("table", None)
    selects = list(tree.expressions)
    group = tree.args.get("group")
    groups: list[exp.Expression] = []
    for node in group.expressions if group is not None else []:
        if isinstance(node, exp.Literal) and not node.is_string:
            position = int(node.name) - 1
            if not 0 <= position < len(selects):
                return None
            node = selects[position].unalias()
        groups.append(node)
    if group is not None and (group.args.get("rollup") or group.args.get("cube")):
        return None
    if group is not None and group.args.get("grouping_sets"):
        return None
    condition = where.this
    for node in (condition, *groups, *selects):
        for child in node.walk():
            if isinstance(child, UNMERGEABLE):
                return None
            if isinstance(child, exp.Star) and child.find_ancestor(exp.AggFunc) is None:
                return None  # SELECT *
    if group is None and not any(select.find(exp.AggFunc) is not None for select in selects):
        return None  # not an aggregate: one row per view row
    group_sql = [_render_part(g) for g in groups]
    items: list[tuple[str, int | str]] = []
    for select in selects:
        expression = select.unalias()
        rendered = _render_part(expression)
        if rendered in group_sql:
            items.append(("group", group_sql.index(rendered)))
            continue
        expression = expression.copy()
        outside = [
            c for c in expression.find_all(exp.Column) if c.find_ancestor(exp.AggFunc) is None
        ]
        if outside:
            return None  # a column neither grouped nor aggregated
        for aggregate in list(expression.find_all(exp.AggFunc)):
            if aggregate.find_ancestor(exp.AggFunc) is not None:
                return None
            filtered = exp.Filter(
                this=aggregate.copy(), expression=exp.Where(this=condition.copy())
            )
            if aggregate is expression:
                expression = filtered
            else:
                aggregate.replace(filtered)
        items.append(("value", _render_part(expression)))
    return Mergeable(
        key=(table.name, tuple(group_sql)), where=_render_part(condition), items=tuple(items)
    )


def _shared_variant(tree: exp.Query) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """(SQL over the shared scans, bounds per view), or None if a view read is unbounded."""
    bounds = []
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or table.name not in VIEWS:
            continue
        if table.name in ctes:
            return None  # a CTE named like a view: keep it simple, run the query alone
        bound = _time_bound(table)
        if bound is None:
            return None
        text = bound.sql(dialect=PARSE_DIALECT, comments=False, identify=True)
        bounds.append((table.name, text.replace("%", "%%")))
    if not bounds:
        return None

    def scan(view: str, alias: exp.TableAlias) -> exp.Expression:
        return exp.Table(this=exp.to_identifier(SCAN_PREFIX + view, quoted=True), alias=alias)

    rewrite_tables(tree, tenant_scoped=True, replace_view=scan)
    sql = render(tree, PARSE_DIALECT).replace("%", "%%")
    return sql, tuple(sorted(set(bounds)))


def _sqlite_translation(node: exp.Expression) -> exp.Expression:
    """What the SQLite generator needs said explicitly.

    `x - INTERVAL '5 minutes'` becomes `DATETIME(x, '-5 minutes')` (SQLite has no
    intervals), and a comma join an explicit CROSS JOIN (what SQLite's reader makes of
    it), so that the rendered SQL re-parses to itself.
    """
    if isinstance(node, exp.Join) and not (
        node.args.get("kind")
        or node.args.get("side")
        or node.args.get("on")
        or node.args.get("using")
    ):
        node.set("kind", "CROSS")
        return node
    if isinstance(node, exp.Sub | exp.Add) and isinstance(node.expression, exp.Interval):
        interval = node.expression
        amount = interval.this.name if isinstance(interval.this, exp.Literal) else None
        unit = interval.unit.name.lower() if interval.unit is not None else ""
        if amount is None:
            raise QueryError("on SQLite, intervals must be literals such as INTERVAL '5 minutes'")
        parts = amount.split()
        if not unit and len(parts) == 2:
            amount, unit = parts
        unit = unit if unit.endswith("s") else unit + "s"
        sign = "-" if isinstance(node, exp.Sub) else "+"
        return exp.Anonymous(
            this="DATETIME",
            expressions=[node.this, exp.Literal.string(f"{sign}{amount} {unit}")],
        )
    return node


def render(tree: exp.Query, dialect: str) -> str:
    """The SQL of the checked tree; refused unless it re-parses to exactly itself."""
    options = {"dialect": dialect, "comments": False, "identify": True}
    sql = tree.sql(**options)
    try:
        again = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (sqlglot.errors.SqlglotError, RecursionError) as exc:
        raise QueryError("the query uses a construct that cannot be run safely") from exc
    if len(again) != 1 or again[0].sql(**options) != sql:
        raise QueryError("the query uses a construct that cannot be run safely")
    return sql


#: Compiled queries kept per process (a pure function of the rule's text and scope).
COMPILE_CACHE_SIZE = 8_192


@lru_cache(maxsize=COMPILE_CACHE_SIZE)
def compile_query(query: str, *, global_rule: bool, dialect: str = PARSE_DIALECT) -> CompiledQuery:
    """Check and rewrite a rule's query (cached: a pure function of its arguments)."""
    tree = parse_single_select(query)
    tree = normalize_identifiers(tree, dialect=PARSE_DIALECT)
    check_tree(tree)
    shared = merge = None
    if dialect == PARSE_DIALECT and not global_rule:
        try:
            shared = _shared_variant(tree.copy())
            merge = _mergeable(tree) if shared else None
        except QueryError:
            shared = merge = None  # the query itself is checked (and refused) below
    views = rewrite_tables(tree, tenant_scoped=not global_rule)
    if dialect == "sqlite":
        tree = tree.transform(_sqlite_translation)
    sql = render(tree, dialect)
    # `%` is the driver's placeholder marker: literal percent signs are doubled first.
    sql = sql.replace("%", "%%").replace(f'"{TENANT_SENTINEL}"', "%(tenant)s")
    return CompiledQuery(
        sql=sql,
        views=views,
        tenant_scoped=not global_rule,
        shared_sql=shared[0] if shared else None,
        bounds=shared[1] if shared else (),
        merge=merge,
    )


def current_dialect() -> str:
    return DIALECTS.get(connection.vendor, PARSE_DIALECT)


# --- execution -------------------------------------------------------------------------

#: run(sql, params, types=False) -> (column names, rows); types: (name, type oid) per
#: column instead of names (PostgreSQL only).
Runner = Callable[..., tuple[list[str], list[tuple]]]


def _describe_database_error(exc: Exception) -> str:
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate == "57014" or "interrupted" in str(exc).lower():
        return (
            f"the query was cancelled after ALERT_SQL_TIMEOUT_MS={settings.ALERT_SQL_TIMEOUT_MS} ms"
        )
    if sqlstate == "25006" or "readonly" in str(exc).lower().replace(" ", ""):
        return "the query tried to write: rule queries run read-only"
    return f"the query failed: {_first_line(exc)}"


@contextmanager
def _postgres_sandbox() -> Iterator[Runner]:
    """A read-only subtransaction with a statement timeout, always rolled back."""
    timeout = str(settings.ALERT_SQL_TIMEOUT_MS)
    with transaction.atomic():
        savepoint = None

        def enter() -> None:
            nonlocal savepoint
            savepoint = transaction.savepoint()
            with connection.cursor() as cursor:
                # Allowed inside a subtransaction, and reverted by the rollback below.
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true), "
                    "set_config('standard_conforming_strings', 'on', true)",
                    [timeout],
                )

        def run(sql: str, params: dict, types: bool = False) -> tuple[list, list[tuple]]:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    if types:  # (name, type oid) per column
                        columns = [(str(c.name), int(c.type_code)) for c in cursor.description]
                    else:
                        columns = [column[0] for column in cursor.description]
                    return columns, cursor.fetchmany(MAX_ROWS + 1)
            except DatabaseError as exc:
                # A failed statement aborts the subtransaction: start a fresh one.
                transaction.savepoint_rollback(savepoint)
                enter()
                raise QueryError(_describe_database_error(exc)) from exc

        enter()
        try:
            yield run
        finally:
            transaction.savepoint_rollback(savepoint)


@contextmanager
def _sqlite_sandbox() -> Iterator[Runner]:
    """`PRAGMA query_only` and a progress handler that interrupts at the timeout."""
    connection.ensure_connection()
    raw = connection.connection
    timeout = settings.ALERT_SQL_TIMEOUT_MS / 1000
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA query_only = ON")

    def run(sql: str, params: dict, types: bool = False) -> tuple:
        deadline = time.monotonic() + timeout
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                columns = [column[0] for column in cursor.description]
                return columns, cursor.fetchmany(MAX_ROWS + 1)
        except DatabaseError as exc:
            raise QueryError(_describe_database_error(exc)) from exc
        finally:
            raw.set_progress_handler(None, 0)

    try:
        yield run
    finally:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA query_only = OFF")


def sandbox():
    return _postgres_sandbox() if connection.vendor == "postgresql" else _sqlite_sandbox()


def _is_numeric(value) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _label_value(value):
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def rows_to_samples(rule: AlertRule, columns: list[str], rows: Sequence[tuple]) -> list[Sample]:
    """Rows -> samples: `value` (else the first numeric column) is the value, `tenant_id`
    the tenant, every other column a label."""
    if len(rows) > MAX_ROWS:
        raise QueryError(
            f"the query returned more than {MAX_ROWS} rows; aggregate it (GROUP BY) so "
            "that each row is one alert"
        )
    names = [str(c).lower() for c in columns]
    tenant_index = names.index("tenant_id") if "tenant_id" in names else None
    if rule.tenant_id is None and tenant_index is None and rows:
        raise QueryError(
            "a global rule's query must return a tenant_id column (its alerts belong to "
            "that tenant); add tenant_id to the SELECT and GROUP BY"
        )
    if "value" in names:
        value_index = names.index("value")
    else:
        value_index = next(
            (
                i
                for i in range(len(names))
                if i != tenant_index
                and any(_is_numeric(row[i]) for row in rows)
                and all(row[i] is None or _is_numeric(row[i]) for row in rows)
            ),
            None,
        )
    if value_index is None and rule.condition_operator and rows:
        raise QueryError(
            "the query returns no numeric column to compare with the threshold; name it value"
        )
    # Label names are cleaned once per column, not once per row (results can be large).
    label_columns = [
        (i, clean_label_name(names[i]))
        for i in range(len(names))
        if i not in (value_index, tenant_index)
    ]
    samples = []
    for row in rows:
        labels = {}
        for i, name in label_columns:
            raw = row[i]
            value = raw[:MAX_LABEL_VALUE] if type(raw) is str else label_value(_label_value(raw))
            if value:
                labels[name] = value
        if rule.tenant_id is not None:
            tenant_id = rule.tenant_id  # a tenant's rule only ever concerns that tenant
        else:
            raw = row[tenant_index]
            tenant_id = int(raw) if _is_numeric(raw) else None
        value = clean_value(row[value_index]) if value_index is not None else None
        samples.append(Sample(labels=labels, value=value, tenant_id=tenant_id))
    return samples


class SqlDatasource(Datasource):
    """SELECT over the tenant-scoped views, in a read-only, time-limited transaction."""

    name = DatasourceChoice.SQL

    def validate(self, query: str, *, global_rule: bool | None = None) -> None:
        compile_query(query, global_rule=bool(global_rule), dialect=current_dialect())

    def evaluate(self, rule: AlertRule) -> list[Sample]:
        result = self.evaluate_many([rule])[rule.pk]
        if result.error is not None:
            raise result.error
        return result.samples

    def evaluate_many(self, rules: Sequence[AlertRule]) -> dict[int, Result]:
        """Every rule of the batch in one sandbox: one transaction, one timeout setting.

        A tenant's rules that can (`_may_share`) run together: merged passes, then shared
        scans (see below); the others, and those of a statement that failed, one by one.
        """
        results: dict[int, Result] = {}
        compiled = {}
        dialect = current_dialect()
        for rule in rules:
            try:
                compiled[rule.pk] = compile_query(
                    rule.query, global_rule=rule.tenant_id is None, dialect=dialect
                )
            except QueryError as exc:
                results[rule.pk] = Result(error=exc)
        if not compiled:
            return results
        shared: dict[int, list[AlertRule]] = {}
        alone: list[AlertRule] = []
        for rule in rules:
            query = compiled.get(rule.pk)
            if query is None:
                continue
            if _may_share(rule, query):
                shared.setdefault(rule.tenant_id, []).append(rule)
            else:
                alone.append(rule)
        with sandbox() as run:
            for tenant_id, group in shared.items():
                alone += _run_together(run, tenant_id, group, compiled, results)
            for rule in alone:
                query = compiled[rule.pk]
                params = {"tenant": rule.tenant_id} if query.tenant_scoped else {}
                started = time.perf_counter()
                try:
                    columns, rows = run(query.sql, params)
                    result = Result(samples=rows_to_samples(rule, columns, rows))
                except QueryError as exc:
                    result = Result(error=exc)
                result.seconds = time.perf_counter() - started
                results[rule.pk] = result
        return results


# --- shared scans ----------------------------------------------------------------------
#
# The rules of one tenant mostly read the same view over recent windows. Run one by one,
# each is an index range scan over (tenant, time) that fetches its rows from the heap:
# a hundred rules over the last minutes of `events` fetch the same rows a hundred times.
# Run together, they are one statement: each view is scanned once per tenant, from the
# earliest of the rules' lower time bounds, into a CTE that every rule's query reads in
# place of the view (same columns, same types, the same rows from its bound on), and each
# rule's rows come back as one array of records. The records are decoded with the loaders
# the driver uses for the rule's own columns (read once per query text with LIMIT 0), so
# a rule gives exactly the values, and the alerts exactly the labels, it gives alone.

#: query SQL -> ((column name, type oid), ...), per process (the views' types are fixed),
#: least recently used first; as large as the cache of compiled queries.
_DESCRIPTIONS: OrderedDict[str, tuple[tuple[str, int], ...]] = OrderedDict()
MAX_DESCRIPTIONS = COMPILE_CACHE_SIZE


def _may_share(rule: AlertRule, query: CompiledQuery) -> bool:
    return (
        settings.ALERT_SQL_SHARED_SCANS
        and query.shared_sql is not None
        and rule.tenant_id is not None
        and rule.health != RuleHealth.ERROR  # a failing rule fails alone
        and connection.vendor == "postgresql"
    )


def _describe(run: Runner, query: CompiledQuery, tenant_id: int) -> tuple[tuple[str, int], ...]:
    description = _DESCRIPTIONS.get(query.sql)
    if description is not None:
        _DESCRIPTIONS.move_to_end(query.sql)
    else:
        # Through the sandbox's runner: a query that fails even to be planned rolls the
        # subtransaction back like any failing rule, and the batch goes on.
        columns, _ = run(
            f'SELECT * FROM ({query.sql}) AS "__trv_q" LIMIT 0', {"tenant": tenant_id}, types=True
        )
        description = tuple(columns)
        _DESCRIPTIONS[query.sql] = description
        if len(_DESCRIPTIONS) > MAX_DESCRIPTIONS:
            _DESCRIPTIONS.popitem(last=False)
    return description


def shared_statement(queries: Sequence[CompiledQuery]) -> str:
    """One statement for `queries` (one tenant's, `%(tenant)s`): the shared scans, then
    one row per query, (its index, the array of its rows as records)."""
    bounds: dict[str, list[str]] = {}
    for query in queries:
        for view, bound in query.bounds:
            if bound not in bounds.setdefault(view, []):
                bounds[view].append(bound)
    scans = []
    for view in sorted(bounds):
        column = TIME_COLUMNS[view]
        scans.append(
            f'"{SCAN_PREFIX}{view}" AS (SELECT * FROM ({VIEWS[view]}) AS "__trv_v" '
            f'WHERE "tenant_id" = %(tenant)s AND "{column}" >= LEAST({", ".join(bounds[view])}))'
        )
    parts = [
        f'SELECT {index} AS "__trv_i", (SELECT array_agg("__trv_r") FROM '
        f'(SELECT * FROM ({query.shared_sql}) AS "__trv_q" LIMIT {MAX_ROWS + 1}) AS "__trv_r")'
        for index, query in enumerate(queries)
    ]
    return f"WITH {', '.join(scans)} " + " UNION ALL ".join(parts)


def _converters(description: tuple[tuple[str, int], ...]) -> list[Callable[[str], object]]:
    """Per column, what turns a record field (the type's text output) into the value the
    driver gives for that column: the connection's own text loader, or nothing at all
    where that loader returns the text as it is (text, and what Django reads as text)."""
    from psycopg.pq import Format

    raw = connection.connection
    adapters = raw.adapters
    text_loader = adapters.get_loader(25, Format.TEXT)
    converters = []
    for _, oid in description:
        loader = adapters.get_loader(oid, Format.TEXT)
        if loader is None or loader is text_loader:
            converters.append(str)
        else:
            load = loader(oid, raw).load
            converters.append(lambda value, load=load: load(value.encode()))
    return converters


def _decode(description: tuple[tuple[str, int], ...], records: list | None) -> list[tuple]:
    if not records:
        return []
    converters = _converters(description)
    width = len(converters)
    rows = []
    for record in records:
        if len(record) != width:
            raise ValueError("a record does not match the query's columns")
        rows.append(
            tuple(
                value if value is None or convert is str else convert(value)
                for convert, value in zip(converters, record)  # noqa: B905 (checked above)
            )
        )
    return rows


def merged_statement(queries: Sequence[CompiledQuery]) -> str:
    """One pass over one view for `queries` that share its GROUP BY (see `Mergeable`):
    the groups, each query's columns, and per query how many rows of the group it sees."""
    view, groups = queries[0].merge.key
    bounds = []
    for query in queries:
        bounds += [bound for name, bound in query.bounds if name == view and bound not in bounds]
    columns = [f'{g} AS "__trv_g{i}"' for i, g in enumerate(groups)]
    for k, query in enumerate(queries):
        columns += [
            f'{sql} AS "__trv_{k}_{j}"'
            for j, (kind, sql) in enumerate(query.merge.items)
            if kind == "value"
        ]
        columns.append(f'COUNT(*) FILTER (WHERE {query.merge.where}) AS "__trv_n{k}"')
    conditions = " OR ".join(f"({query.merge.where})" for query in queries)
    sql = (
        f'SELECT {", ".join(columns)} FROM ({VIEWS[view]}) AS "__trv_v" '
        f'WHERE "tenant_id" = %(tenant)s AND "{TIME_COLUMNS[view]}" >= LEAST({", ".join(bounds)}) '
        f"AND ({conditions})"
    )
    if groups:
        sql += f" GROUP BY {', '.join(groups)}"
    return sql


#: (tenant, tier, key) -> monotonic time until which that group runs in the next tier:
#: a merged pass or shared statement that hit the timeout is not tried again for a while
#: (each rule still has the whole timeout alone), per process.
_TIMED_OUT: dict[tuple, float] = {}
TIMED_OUT_SECONDS = 600.0


def _timed_out(key: tuple) -> bool:
    until = _TIMED_OUT.get(key)
    if until is not None and until <= time.monotonic():
        del _TIMED_OUT[key]
        return False
    return until is not None


def _remember_timeout(key: tuple, exc: Exception) -> None:
    if "cancelled after ALERT_SQL_TIMEOUT_MS" in str(exc):
        _TIMED_OUT[key] = time.monotonic() + TIMED_OUT_SECONDS


def _run_together(
    run: Runner,
    tenant_id: int,
    rules: Sequence[AlertRule],
    compiled: dict[int, CompiledQuery],
    results: dict[int, Result],
) -> list[AlertRule]:
    """Evaluate one tenant's rules in merged passes (rules with the same merge key), then
    the rest in shared-scan statements; record their results, return the rules left to
    run alone (too few to share, or in a statement that failed)."""
    by_key: dict[tuple, list[AlertRule]] = defaultdict(list)
    for rule in rules:
        if compiled[rule.pk].merge is not None:
            by_key[compiled[rule.pk].merge.key].append(rule)
    for key, members in by_key.items():
        if len(members) > 1 and not _timed_out((tenant_id, "merged", key)):
            results.update(_run_merged(run, tenant_id, members, compiled) or {})
    rest = [rule for rule in rules if rule.pk not in results]
    if len(rest) < 2 or _timed_out((tenant_id, "shared")):
        return rest
    alone = []
    for start in range(0, len(rest), SHARED_SCAN_CHUNK):
        chunk = rest[start : start + SHARED_SCAN_CHUNK]
        done = _run_shared(run, tenant_id, chunk, compiled)
        if done is None:
            alone += chunk
        else:
            results.update(done)
    return alone


def _run_merged(
    run: Runner, tenant_id: int, rules: Sequence[AlertRule], compiled: dict[int, CompiledQuery]
) -> dict[int, Result] | None:
    """Results of `rules` (one tenant's, one merge key) from one pass over their view;
    None if the statement failed or is too large (the caller runs them otherwise)."""
    started = time.perf_counter()
    queries = [compiled[rule.pk] for rule in rules]
    grouped = bool(queries[0].merge.key[1])
    try:
        names = [[name for name, _ in _describe(run, query, tenant_id)] for query in queries]
        columns, rows = run(merged_statement(queries), {"tenant": tenant_id})
    except (QueryError, DatabaseError) as exc:
        logger.info(
            "merged pass of %d rules of tenant %s failed (%s); sharing a scan instead",
            len(rules), tenant_id, exc,
        )  # fmt: skip
        _remember_timeout((tenant_id, "merged", queries[0].merge.key), exc)
        return None
    if len(rows) > MAX_ROWS:
        return None  # a result this large is checked rule by rule
    index = {name: i for i, name in enumerate(columns)}
    seconds = (time.perf_counter() - started) / len(rules)
    results = {}
    for k, (rule, query) in enumerate(zip(rules, queries, strict=True)):
        positions = [
            value if kind == "group" else index[f"__trv_{k}_{j}"]
            for j, (kind, value) in enumerate(query.merge.items)
        ]
        seen = index[f"__trv_n{k}"]
        own = [tuple(row[p] for p in positions) for row in rows if not grouped or row[seen]]
        try:
            result = Result(samples=rows_to_samples(rule, names[k], own))
        except QueryError as exc:
            result = Result(error=exc)
        result.seconds = seconds
        results[rule.pk] = result
    return results


def _run_shared(
    run: Runner, tenant_id: int, rules: Sequence[AlertRule], compiled: dict[int, CompiledQuery]
) -> dict[int, Result] | None:
    """Results of `rules` (one tenant's) from one statement; None if it failed as a whole
    (a rule's runtime error, the timeout): the caller then runs them one by one."""
    started = time.perf_counter()
    queries = [compiled[rule.pk] for rule in rules]
    try:
        descriptions = [_describe(run, query, tenant_id) for query in queries]
        _, rows = run(shared_statement(queries), {"tenant": tenant_id})
        by_index = {index: records for index, records in rows}
        decoded = [_decode(descriptions[i], by_index.get(i)) for i in range(len(queries))]
    except (QueryError, DatabaseError, ValueError) as exc:
        logger.info(
            "shared scan of %d rules of tenant %s failed (%s); running them alone",
            len(rules),
            tenant_id,
            exc,
        )
        _remember_timeout((tenant_id, "shared"), exc)
        return None
    seconds = (time.perf_counter() - started) / len(rules)
    results = {}
    for rule, description, rows in zip(rules, descriptions, decoded, strict=True):
        columns = [name for name, _ in description]
        try:
            result = Result(samples=rows_to_samples(rule, columns, rows))
        except QueryError as exc:
            result = Result(error=exc)
        result.seconds = seconds
        results[rule.pk] = result
    return results
