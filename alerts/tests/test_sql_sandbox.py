"""The SQL sandbox against a corpus of hostile queries, on PostgreSQL.

Every query of the corpus is either refused at validation, with a message saying why,
or harmless when it runs: it reads nothing but its own tenant's rows through the views.
Afterwards every tenants_* and alerts_* table is exactly as it was (row counts and
checksums). A slow query is cancelled at ALERT_SQL_TIMEOUT_MS and the rule goes to
`error`.
"""

from __future__ import annotations

import pytest
from django.db import connection

from alerts.choices import RuleHealth
from alerts.evaluation import QueryError, get_datasource
from alerts.evaluation.runner import evaluate_rules
from alerts.evaluation.sql import compile_query, sandbox
from conftest import require_postgresql
from metrics.catalogue import ALERT_EVALUATIONS
from tenants.models import ApiKey, AuditEvent

from .engine_helpers import make_rule, refresh

pytestmark = pytest.mark.django_db

SQL = get_datasource("sql")


@pytest.fixture
def world(tenant_a, tenant_b):
    require_postgresql("the sandbox's second wall (READ ONLY, statement_timeout) is PostgreSQL's")
    for tenant, n in ((tenant_a, 3), (tenant_b, 5)):
        for i in range(n):
            AuditEvent.objects.create(
                tenant=tenant, actor=f"user{i}", action="auth.login", result="failure",
                method="jwt", ip_address="10.0.0.1",
            )  # fmt: skip
        AuditEvent.objects.create(tenant=tenant, actor="root", action="tenant.updated")
        ApiKey.issue(tenant, "ingest")
    return {"a": tenant_a, "b": tenant_b, "rule": make_rule(tenant_a, query="SELECT 1")}


def checksums() -> dict[str, tuple[int, str]]:
    """Row count and content checksum of every tenants_* and alerts_* table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND (table_name LIKE 'tenants\\_%%' OR table_name LIKE 'alerts\\_%%') ORDER BY 1"
        )
        tables = [row[0] for row in cursor.fetchall()]
        result = {}
        for table in tables:
            cursor.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"
            )
            result[table] = cursor.fetchone()
    assert "tenants_auditevent" in result and "alerts_alertrule" in result
    return result


def run(rule, query):
    rule.query = query
    return SQL.evaluate(rule)


def refused(message):
    return ("refused", message)


def harmless(check):
    return ("harmless", check)


def only_own_failures(samples, world):
    """The query ran and counted tenant A's 3 failed logins, never B's 5."""
    return [s.value for s in samples] == [3]


def nothing(samples, world):
    return all(not s.value for s in samples)


def one_row_of_one(samples, world):
    return [s.value for s in samples] == [1]


# (query, expectation). {b} is tenant B's id (a foreign tenant's rows).
HOSTILE = [
    # writes and DDL
    ("DELETE FROM audit_log", refused("only a SELECT query is allowed; this is a DELETE")),
    ("UPDATE tenants_tenant SET name = 'owned'", refused("this is a UPDATE statement")),
    ("INSERT INTO tenants_auditevent (action) VALUES ('x')", refused("INSERT")),
    ("DROP TABLE tenants_tenant", refused("DROP")),
    ("TRUNCATE tenants_auditevent", refused("TRUNCATE")),
    ("CREATE TABLE stolen AS SELECT * FROM audit_log", refused("CREATE")),
    ("ALTER TABLE tenants_tenant ADD COLUMN x int", refused("only a SELECT query is allowed")),
    ("GRANT ALL ON tenants_tenant TO PUBLIC", refused("GRANT")),
    ("COPY tenants_apikey TO '/tmp/keys'", refused("COPY")),
    ("COPY (SELECT 1) TO PROGRAM 'id'", refused("only a SELECT query is allowed")),
    (
        "WITH gone AS (DELETE FROM tenants_auditevent RETURNING *) SELECT count(*) FROM gone",
        refused("DELETE is not allowed"),
    ),
    ("SELECT * INTO stolen FROM audit_log", refused("SELECT INTO is not allowed")),
    ("SELECT * FROM audit_log FOR UPDATE", refused("locking clauses")),
    ("SELECT * FROM audit_log FOR SHARE SKIP LOCKED", refused("locking clauses")),
    ("EXPLAIN ANALYZE DELETE FROM tenants_auditevent", refused("EXPLAIN")),
    ("DO $$ BEGIN DELETE FROM tenants_auditevent; END $$", refused("DO")),
    ("VACUUM FULL", refused("VACUUM")),
    ("LOCK TABLE tenants_tenant", refused("LOCK")),
    ("SET ROLE postgres", refused("only a SELECT query is allowed")),
    ("PREPARE p AS DELETE FROM tenants_auditevent", refused("PREPARE")),
    # chained statements
    ("SELECT 1; DELETE FROM tenants_auditevent", refused("exactly one SELECT statement")),
    ("SELECT count(*) FROM audit_log; DROP TABLE tenants_tenant; --", refused("found 2")),
    ("SELECT E'\\''; DELETE FROM tenants_auditevent; --'", refused("exactly one SELECT")),
    # comments hiding statements
    ("SELECT 1 -- harmless\n; DELETE FROM tenants_auditevent", refused("exactly one SELECT")),
    ("SELECT 1 AS value /* ; DELETE FROM tenants_auditevent; */", harmless(one_row_of_one)),
    (
        "SELECT 1 AS value /* /* nested */ ; DELETE FROM tenants_auditevent; */",
        harmless(one_row_of_one),
    ),
    ("SELECT 1 AS value -- ; DELETE FROM tenants_auditevent", harmless(one_row_of_one)),
    # functions outside the allow-list
    ("SELECT pg_sleep(30)", refused("function pg_sleep() is not allowed")),
    ("SELECT pg_catalog.pg_sleep(30)", refused("pg_sleep")),
    (
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        refused("function set_config() is not allowed"),
    ),
    ("SELECT current_setting('data_directory')", refused("current_setting")),
    ("SELECT pg_read_file('/etc/passwd')", refused("pg_read_file")),
    (
        "SELECT * FROM dblink('host=127.0.0.1', 'DELETE FROM tenants_auditevent') AS t(x text)",
        refused("function dblink() is not allowed"),
    ),
    ("SELECT lo_import('/etc/passwd')", refused("lo_import")),
    ("SELECT nextval('tenants_tenant_id_seq')", refused("nextval")),
    ("SELECT pg_terminate_backend(pg_backend_pid())", refused("is not allowed")),
    (
        "SELECT query_to_xml('DELETE FROM tenants_auditevent', true, true, '')",
        refused("query_to_xml"),
    ),
    ("SELECT version()", refused("is not allowed")),
    ("SELECT * FROM ROWS FROM (pg_sleep(1))", refused("pg_sleep")),
    # system catalogs and real tables
    ("SELECT * FROM pg_catalog.pg_authid", refused("system catalogs")),
    ("SELECT rolpassword FROM pg_authid", refused("system catalogs (pg_authid)")),
    ("SELECT table_name FROM information_schema.tables", refused("system catalogs")),
    ("SELECT 'tenants_apikey'::regclass", refused("object identifier types")),
    ("SELECT key_hash FROM tenants_apikey", refused("unknown table tenants_apikey; allowed")),
    ("SELECT * FROM public.tenants_auditevent", refused("schema-qualified table")),
    ("SELECT (SELECT key_hash FROM tenants_apikey LIMIT 1)", refused("unknown table")),
    ("SELECT 1 UNION SELECT key_hash::int FROM tenants_apikey", refused("unknown table")),
    (
        "SELECT count(*) FROM audit_log WHERE tenant_id IN (SELECT id FROM tenants_tenant)",
        refused("unknown table tenants_tenant"),
    ),
    ("SELECT x::pg_catalog.int4 FROM audit_log", refused("type")),
    # other tenants' ids: the view only has the rule's tenant
    ("SELECT count(*) AS value FROM audit_log WHERE tenant_id = {b}", harmless(nothing)),
    (
        "SELECT count(*) AS value FROM auth_attempts WHERE result = 'failure' OR tenant_id = {b} OR 1 = 1",
        harmless(only_own_failures),
    ),
    (
        "SELECT count(*) AS value FROM auth_attempts a, audit_log b WHERE b.tenant_id = {b}",
        harmless(nothing),
    ),
    (
        "SELECT count(*) AS value FROM (SELECT * FROM auth_attempts UNION ALL "
        "SELECT * FROM auth_attempts WHERE tenant_id = {b}) u",
        harmless(only_own_failures),
    ),
    # CTE names that shadow real tables cannot reach them
    ("WITH tenants_auditevent AS (SELECT 1 AS value) SELECT * FROM tenants_auditevent", harmless(one_row_of_one)),
    (
        "WITH a AS (SELECT * FROM tenants_apikey), tenants_apikey AS (SELECT 1) SELECT * FROM a",
        harmless(lambda result, world: isinstance(result, QueryError)),
    ),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", refused("recursive")),
    # parameters and reserved names
    ("SELECT $1", refused("query parameters are not allowed")),
    ("SELECT %(tenant)s", refused("query parameters are not allowed")),
    ("SELECT 1 AS __trv_tenant__", refused("reserved")),
    ("SELECT xmlparse(document '<x/>')", refused("could not parse")),
]  # fmt: skip


def test_the_corpus_is_large_enough():
    assert len(HOSTILE) >= 30
    assert sum(1 for _, (kind, _) in HOSTILE if kind == "refused") >= 30


def test_hostile_queries_are_refused_or_harmless_and_change_nothing(world):
    rule = world["rule"]
    before = checksums()
    failures = []
    for template, (kind, expectation) in HOSTILE:
        query = template.replace("{b}", str(world["b"].pk))
        try:
            SQL.validate(query, global_rule=False)
        except QueryError as exc:
            if kind != "refused" or expectation not in str(exc):
                failures.append(f"{query!r}: refused with {exc!r}, expected {kind} {expectation!r}")
            continue
        if kind == "refused":
            failures.append(f"{query!r}: accepted, expected a refusal ({expectation!r})")
            continue
        try:
            result = run(rule, query)
        except QueryError as exc:
            result = exc
        if not expectation(result, world):
            failures.append(f"{query!r}: ran and returned {result!r}")
    assert failures == []
    assert checksums() == before


def test_the_second_wall_refuses_writes_even_without_the_parser(world):
    before = checksums()
    with sandbox() as execute:
        with pytest.raises(QueryError, match="rule queries run read-only"):
            execute("DELETE FROM tenants_auditevent", {})
        with pytest.raises(QueryError, match="rule queries run read-only"):
            execute("CREATE TABLE stolen (x int)", {})
        # The sandbox carries on after a refused statement.
        assert execute("SELECT count(*) FROM tenants_auditevent", {})[1] == [(10,)]
    assert checksums() == before


def test_the_second_wall_cancels_a_slow_statement(world, settings):
    settings.ALERT_SQL_TIMEOUT_MS = 200
    with sandbox() as execute:
        with pytest.raises(QueryError, match="cancelled after ALERT_SQL_TIMEOUT_MS=200 ms"):
            execute("SELECT pg_sleep(5)", {})


def test_the_tenant_is_a_bound_parameter(world):
    compiled = compile_query("SELECT count(*) FROM audit_log", global_rule=False)
    assert '"tenant_id" = %(tenant)s' in compiled.sql
    assert str(world["a"].pk) not in compiled.sql
    # A literal percent sign survives the driver's placeholder syntax.
    rule = world["rule"]
    assert [
        s.value
        for s in run(rule, "SELECT count(*) AS value FROM audit_log WHERE actor LIKE 'user%'")
    ] == [3]


def test_a_slow_query_is_cancelled_and_the_rule_goes_to_error(world, settings):
    settings.ALERT_SQL_TIMEOUT_MS = 300
    slow = make_rule(
        world["a"],
        name="slow",
        query="SELECT count(*) AS value FROM generate_series(1, 100000) a "
        "CROSS JOIN generate_series(1, 100000) b",
    )
    before = ALERT_EVALUATIONS.labels(tenant_id=str(world["a"].pk), result="error")._value.get()
    (outcome,) = evaluate_rules([slow.pk])
    assert outcome.result == "error"
    slow = refresh(slow)
    assert slow.health == RuleHealth.ERROR
    assert slow.last_error == "the query was cancelled after ALERT_SQL_TIMEOUT_MS=300 ms"
    after = ALERT_EVALUATIONS.labels(tenant_id=str(world["a"].pk), result="error")._value.get()
    assert after - before == 1


ALLOWED = [
    "count(*)", "count(DISTINCT actor)", "sum(id)", "avg(id)", "min(id)", "max(id)", "stddev(id)",
    "stddev_pop(id)", "stddev_samp(id)", "variance(id)", "var_pop(id)", "var_samp(id)",
    "array_agg(actor)", "string_agg(actor, ',')", "bool_and(id > 0)", "bool_or(id > 0)",
    "every(id > 0)", "percentile_cont(0.95) WITHIN GROUP (ORDER BY id)",
    "percentile_disc(0.5) WITHIN GROUP (ORDER BY id)", "mode() WITHIN GROUP (ORDER BY id)",
    "abs(id)", "ceil(id)", "floor(id)", "round(id, 2)", "trunc(id)", "sqrt(id)", "exp(1)",
    "ln(2)", "log(10, 100)", "sign(id)", "greatest(id, 1)", "least(id, 1)", "power(id, 2)",
    "mod(id, 2)", "id % 2", "coalesce(actor, '')", "nullif(actor, '')",
    "CASE WHEN id > 1 THEN 1 ELSE 0 END", "now()", "current_timestamp", "current_date",
    "clock_timestamp()", "statement_timestamp()", "transaction_timestamp()",
    "date_trunc('minute', timestamp)", "extract(epoch from timestamp)",
    "date_part('hour', timestamp)", "age(timestamp)", "to_timestamp(0)",
    "to_char(timestamp, 'YYYY')", "make_interval(mins => 5)", "now() - interval '5 minutes'",
    "lower(actor)", "upper(actor)", "length(actor)", "char_length(actor)",
    "substring(actor, 1, 2)", "substr(actor, 1)", "trim(actor)", "btrim(actor)",
    "ltrim(actor)", "rtrim(actor)", "concat(actor, 'x')", "concat_ws(',', actor)",
    "actor || 'x'", "replace(actor, 'a', 'b')", "split_part(actor, '.', 1)", "left(actor, 2)",
    "right(actor, 2)", "position('a' in actor)", "strpos(actor, 'a')",
    "starts_with(actor, 'a')", "md5(actor)", "regexp_replace(actor, 'a', 'b')",
    "initcap(actor)", "lpad(actor, 5)", "rpad(actor, 5)", "reverse(actor)",
    "actor LIKE 'a%'", "actor ILIKE 'a%'", "actor ~ '^a'", "details->>'path'",
    "details->'path'", "details#>>'{a,b}'", "details ? 'path'",
    "jsonb_extract_path_text(details, 'a')", "json_extract_path_text(details::json, 'a')",
    "jsonb_array_length(details->'list')", "json_array_length((details->'list')::json)", "jsonb_typeof(details)",
    "json_typeof(details::json)", "row_number() OVER ()", "rank() OVER (ORDER BY id)",
    "dense_rank() OVER (ORDER BY id)", "lag(id) OVER (ORDER BY id)", "lead(id) OVER (ORDER BY id)",
    "first_value(id) OVER ()", "last_value(id) OVER ()", "ntile(4) OVER (ORDER BY id)",
    "percent_rank() OVER (ORDER BY id)", "cume_dist() OVER (ORDER BY id)", "ARRAY[1, 2]",
    "array_length(ARRAY[1], 1)", "cardinality(ARRAY[1])", "width_bucket(id, 0, 100, 10)",
    "to_number('12', '99')", "host(ip_address)", "masklen(ip_address)", "id::text",
    "id::float", "actor::varchar", "timestamp::date", "'5 minutes'::interval", "details::jsonb",
]  # fmt: skip


@pytest.mark.parametrize("expression", ALLOWED)
def test_the_documented_allow_list_is_accepted_and_runs(expression, tenant_a):
    rule = make_rule(tenant_a, query="SELECT 1", condition_operator="", threshold=None)
    query = f"SELECT {expression} AS x FROM audit_log GROUP BY id, actor, timestamp, details, ip_address"
    if "OVER" in expression or expression.startswith(
        (
            "count",
            "sum",
            "avg",
            "min",
            "max",
            "std",
            "var",
            "array_agg",
            "string_agg",
            "bool",
            "every",
            "percentile",
            "mode",
        )
    ):
        query = f"SELECT {expression} AS x FROM audit_log"
    SQL.validate(query, global_rule=False)
    if connection.vendor == "postgresql":
        AuditEvent.objects.create(
            tenant=tenant_a,
            actor="alice",
            action="x",
            ip_address="10.0.0.1",
            details={"path": "/", "list": [1]},
        )
        run(rule, query)  # runs on the real tables
