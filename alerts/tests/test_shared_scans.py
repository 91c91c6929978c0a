"""Shared scans: a tenant's sql rules run as one statement (one scan per view) and give
exactly what each gives alone: the same rows, values and labels, the same errors, and
never another tenant's rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.choices import RuleHealth
from alerts.evaluation import get_datasource
from alerts.evaluation import sql as sqlsource
from alerts.evaluation.runner import evaluate_rules
from alerts.models import AlertRule
from conftest import require_postgresql
from events.models import CausalLink, Event
from tenants.models import AuditEvent

from .engine_helpers import make_rule

SQL = get_datasource("sql")


def compiled(query: str, global_rule: bool = False) -> sqlsource.CompiledQuery:
    return sqlsource.compile_query(query, global_rule=global_rule)


# --- which queries can share a scan (no database) ---------------------------------------

SHAREABLE = {
    "SELECT count(*) FROM events WHERE timestamp > now() - interval '5 minutes'": (
        ("events", "CURRENT_TIMESTAMP - INTERVAL '5 MINUTES'"),
    ),
    # reversed comparison, an alias, the bound inside parentheses among other conjuncts
    "SELECT count(*) FROM events e WHERE e.severity = 'error' AND "
    "(now() - interval '1 hour' <= e.timestamp)": (
        ("events", "CURRENT_TIMESTAMP - INTERVAL '1 HOUR'"),
    ),
    # a join: every view read has its own bound
    "SELECT count(*) FROM events e JOIN causality c ON c.effect_id = e.id "
    "WHERE e.timestamp > now() - interval '1 hour' AND c.detected_at >= date_trunc('hour', now())": (
        ("causality", "DATE_TRUNC('HOUR', CURRENT_TIMESTAMP)"),
        ("events", "CURRENT_TIMESTAMP - INTERVAL '1 HOUR'"),
    ),
    # the view read inside a CTE of the rule
    "WITH recent AS (SELECT * FROM auth_attempts WHERE timestamp > now() - interval '2 minutes') "
    "SELECT ip_address, count(*) AS value FROM recent GROUP BY ip_address": (
        ("auth_attempts", "CURRENT_TIMESTAMP - INTERVAL '2 MINUTES'"),
    ),
}

NOT_SHAREABLE = [
    # no lower bound on the view's time
    "SELECT count(*) FROM events",
    "SELECT count(*) FROM events WHERE timestamp < now() - interval '5 minutes'",
    # the bound is not a conjunct of the WHERE
    "SELECT count(*) FROM events WHERE timestamp > now() - interval '5 minutes' OR severity = 'x'",
    # the bound depends on a row, or on the clock while the statement runs
    "SELECT count(*) FROM events e, audit_log a WHERE e.timestamp > a.timestamp "
    "AND a.timestamp > now() - interval '1 minute'",
    "SELECT count(*) FROM events WHERE timestamp > clock_timestamp() - interval '5 minutes'",
    # an unqualified column with two sources, one view unbounded
    "SELECT count(*) FROM events e, audit_log a WHERE timestamp > now() - interval '5 minutes'",
    # a second read of the view without a bound (a subquery)
    "SELECT count(*) FROM events WHERE timestamp > now() - interval '5 minutes' "
    "AND service_id IN (SELECT service_id FROM events WHERE event_type = 'deploy')",
    # a CTE named like a view
    "WITH events AS (SELECT 1 AS x) SELECT count(*) FROM events",
]


@pytest.mark.parametrize("query", list(SHAREABLE))
def test_bounded_reads_of_every_view_can_share_a_scan(query):
    query_ = compiled(query)
    assert query_.shared_sql is not None
    assert query_.bounds == SHAREABLE[query]
    assert "__trv_scan_" in query_.shared_sql
    # The rule's own query is unchanged: the views stay tenant-filtered subqueries.
    assert "__trv_scan_" not in query_.sql and "%(tenant)s" in query_.sql


@pytest.mark.parametrize("query", NOT_SHAREABLE)
def test_unbounded_or_unclear_reads_run_alone(query):
    assert compiled(query).shared_sql is None


def test_global_rules_never_share():
    query = (
        "SELECT tenant_id, count(*) AS value FROM events "
        "WHERE timestamp > now() - interval '5 minutes' GROUP BY tenant_id"
    )
    assert compiled(query, global_rule=True).shared_sql is None


# --- the shared statement against the real database -------------------------------------


@pytest.fixture
def data(tenant_a, tenant_b):
    """Rows well inside every window used below (30 s to 3 min old), and older ones."""
    require_postgresql("shared scans are a PostgreSQL statement")
    now = timezone.now()

    def event(tenant, seconds_ago, event_type="error", service="checkout", **attributes):
        return Event.objects.create(
            tenant=tenant, timestamp=now - timedelta(seconds=seconds_ago), service_id=service,
            event_type=event_type, severity="error" if event_type == "error" else "info",
            message='he said "hi", then {left}', attributes=attributes,
        )  # fmt: skip

    deploy = event(tenant_a, 170, "deploy", version="1.2", tags=["a", "b"])
    for i in range(5):
        effect = event(tenant_a, 30 + i, endpoint="/pay", code=500 + i, ratio=0.25 * i)
        CausalLink.objects.create(
            tenant=tenant_a, cause=deploy, effect=effect, causality_type="deployment",
            confidence=0.5 + i / 10,
        )  # fmt: skip
    event(tenant_a, 60, service="search", endpoint="/q")
    event(tenant_a, 3_600, service="old")  # outside every window
    for _ in range(7):
        event(tenant_b, 30, service="checkout", endpoint="/b")
    for i, (actor, result, ip) in enumerate(
        [("alice", "failure", "10.0.0.1"), ("bob", "failure", "10.0.0.2"),
         ("bob", "success", "2001:db8::1"), ("carol", "failure", "10.0.0.1")]
    ):  # fmt: skip
        AuditEvent.objects.create(
            tenant=tenant_a, actor=actor, action="auth.login", method="jwt", result=result,
            ip_address=ip, timestamp=now - timedelta(seconds=40 + i),
            details={"attempt": i, "nested": {"k": [1, None]}},
        )  # fmt: skip
    AuditEvent.objects.create(
        tenant=tenant_b, actor="eve", action="auth.login", method="jwt", result="failure",
        ip_address="10.9.9.9", timestamp=now - timedelta(seconds=40),
    )  # fmt: skip
    return tenant_a, tenant_b


#: Rules over every view and many column types: what a shared statement must return the
#: same way as each query alone.
PARITY_QUERIES = [
    "SELECT count(*) AS value FROM events WHERE event_type = 'error' "
    "AND timestamp > now() - interval '5 minutes'",
    "SELECT service_id, count(*) AS value FROM events "
    "WHERE timestamp > now() - interval '10 minutes' GROUP BY service_id",
    # jsonb, json paths, text with quotes, commas and braces, timestamps, intervals,
    # numerics, floats, booleans, arrays, NULLs
    "SELECT id, data, data->'tags' AS tags, data->>'endpoint' AS endpoint, message, timestamp, "
    "now() - timestamp > interval '1 second' AS old, (data->>'ratio')::float AS ratio, "
    "(data->>'code')::numeric / 3 AS third, date_trunc('minute', timestamp) - timestamp AS lag, "
    "CAST(NULL AS text) AS nothing, ARRAY[service_id, event_type] AS pair, 1 AS value "
    "FROM events WHERE timestamp > now() - interval '4 minutes' ORDER BY id",
    # inet, jsonb details, DISTINCT aggregates, a HAVING
    "SELECT ip_address, count(DISTINCT username) AS value, max(timestamp) AS last "
    "FROM auth_attempts WHERE result = 'failure' AND timestamp > now() - interval '15 minutes' "
    "GROUP BY ip_address HAVING count(*) > 0",
    "SELECT actor, details, ip_address FROM audit_log WHERE timestamp > now() - interval '2 hours'",
    # a join of two views, duplicate and unnamed columns, DISTINCT ON, LIMIT
    "SELECT e.service_id, c.confidence, c.confidence, count(*) FROM events e "
    "JOIN causality c ON c.effect_id = e.id WHERE e.timestamp > now() - interval '1 hour' "
    "AND c.detected_at > now() - interval '1 hour' GROUP BY 1, 2, 3",
    "SELECT DISTINCT ON (service_id) service_id, timestamp, 2.5 AS value FROM events "
    "WHERE timestamp > now() - interval '20 minutes' ORDER BY service_id, timestamp DESC LIMIT 1",
    # nothing in the window: no rows
    "SELECT service_id, count(*) AS value FROM events WHERE event_type = 'nope' "
    "AND timestamp > now() - interval '1 minute' GROUP BY service_id",
]


def spy_on_statements(monkeypatch) -> list[tuple[str, int]]:
    """Record (kind, number of rules) of every merged pass and shared statement run."""
    calls = []
    for kind, name in (("merged", "_run_merged"), ("shared", "_run_shared")):
        original = getattr(sqlsource, name)

        def spy(*args, kind=kind, original=original):
            calls.append((kind, len(args[2])))
            return original(*args)

        monkeypatch.setattr(sqlsource, name, spy)
    return calls


def evaluate(rules, shared: bool, settings):
    settings.ALERT_SQL_SHARED_SCANS = shared
    return SQL.evaluate_many(rules)


def outcome(result):
    """Error, or the samples (in a fixed order: SQL rows without ORDER BY have none)."""
    if result.error is not None:
        return ("error", str(result.error))
    return sorted(((s.labels, s.value, s.tenant_id) for s in result.samples), key=repr)


@pytest.mark.django_db
def test_a_shared_statement_gives_exactly_what_each_rule_gives_alone(data, settings, monkeypatch):
    tenant_a, _ = data
    rules = [
        make_rule(tenant_a, name=f"r{i}", query=query) for i, query in enumerate(PARITY_QUERIES)
    ]
    assert all(compiled(rule.query).shared_sql for rule in rules)
    calls = spy_on_statements(monkeypatch)
    # Both runs are in the test's transaction: one `now()` for both.
    alone = evaluate(rules, False, settings)
    together = evaluate(rules, True, settings)
    # Two rules grouping by service_id in one pass over `events`, the rest in one statement.
    assert calls == [("merged", 2), ("shared", len(rules) - 2)]
    for rule in rules:
        assert outcome(together[rule.pk]) == outcome(alone[rule.pk]), rule.query
    # The data is what the rules were written to see (not two equally wrong answers).
    assert outcome(alone[rules[0].pk]) == [({}, 6.0, tenant_a.pk)]
    assert outcome(alone[rules[1].pk]) == [
        ({"service_id": "checkout"}, 6.0, tenant_a.pk),
        ({"service_id": "search"}, 1.0, tenant_a.pk),
    ]
    detail = outcome(alone[rules[2].pk])
    assert len(detail) == 7
    deploy = next(labels for labels, _, _ in detail if "version" in labels["data"])
    assert deploy["data"] == '{"tags": ["a", "b"], "version": "1.2"}'
    assert deploy["tags"] == '["a", "b"]' and deploy["old"] == "True"
    assert deploy["message"] == 'he said "hi", then {left}'
    assert deploy["pair"] == '["checkout","deploy"]'
    assert "nothing" not in deploy and "endpoint" not in deploy
    ips = {labels["ip_address"] for labels, _, _ in outcome(alone[rules[3].pk])}
    assert ips == {"10.0.0.1", "10.0.0.2"}
    assert outcome(alone[rules[7].pk]) == []


@pytest.mark.django_db
def test_a_shared_scan_reads_only_the_rules_tenant(data, settings):
    tenant_a, tenant_b = data
    query = (
        "SELECT service_id, count(*) AS value FROM events "
        "WHERE timestamp > now() - interval '5 minutes' GROUP BY service_id"
    )
    logins = (
        "SELECT count(*) AS value FROM auth_attempts WHERE timestamp > now() - interval '5 minutes'"
    )
    rules = [
        make_rule(tenant_a, name="a1", query=query),
        make_rule(tenant_a, name="a2", query=logins),
        make_rule(tenant_b, name="b1", query=query),
        make_rule(tenant_b, name="b2", query=logins),
    ]
    results = evaluate(rules, True, settings)
    assert outcome(results[rules[0].pk]) == [
        ({"service_id": "checkout"}, 6.0, tenant_a.pk),
        ({"service_id": "search"}, 1.0, tenant_a.pk),
    ]
    assert outcome(results[rules[1].pk]) == [({}, 4.0, tenant_a.pk)]
    assert outcome(results[rules[2].pk]) == [({"service_id": "checkout"}, 7.0, tenant_b.pk)]
    assert outcome(results[rules[3].pk]) == [({}, 1.0, tenant_b.pk)]


@pytest.mark.django_db
def test_a_failing_rule_fails_alone_and_the_others_still_get_their_results(data, settings):
    tenant_a, _ = data
    good = make_rule(
        tenant_a,
        name="good",
        query="SELECT count(*) AS value FROM events WHERE timestamp > now() - interval '5 minutes'",
    )
    bad = make_rule(
        tenant_a,
        name="bad",
        query="SELECT 1 / (count(*) - count(*)) AS value FROM events "
        "WHERE timestamp > now() - interval '5 minutes'",
    )
    too_many = make_rule(
        tenant_a,
        name="too_many",
        query="SELECT g AS value FROM generate_series(1, 10001) AS g, "
        "(SELECT count(*) FROM events WHERE timestamp > now() - interval '5 minutes') AS e",
    )
    rules = [good, bad, too_many]
    alone = evaluate(rules, False, settings)
    together = evaluate(rules, True, settings)
    for rule in rules:
        assert outcome(together[rule.pk]) == outcome(alone[rule.pk])
    assert outcome(together[good.pk]) == [({}, 7.0, tenant_a.pk)]
    assert outcome(together[bad.pk])[1].startswith("the query failed: division by zero")
    assert "more than 10000 rows" in outcome(together[too_many.pk])[1]

    # Through the runner: the failing rule is in error, the others are evaluated.
    evaluate_rules([rule.pk for rule in rules])
    health = dict(
        AlertRule.objects.filter(pk__in=[r.pk for r in rules]).values_list("name", "health")
    )
    assert health == {"good": RuleHealth.OK, "bad": RuleHealth.ERROR, "too_many": RuleHealth.ERROR}
    # Next time the rule in error runs alone, and the others share again.
    assert not sqlsource._may_share(
        AlertRule.objects.get(pk=bad.pk), compiled(bad.query)
    ) and sqlsource._may_share(AlertRule.objects.get(pk=good.pk), compiled(good.query))


@pytest.mark.django_db
def test_switched_off_every_rule_runs_its_own_query(data, settings, monkeypatch):
    tenant_a, _ = data
    rules = [
        make_rule(tenant_a, name=f"r{i}", query=query) for i, query in enumerate(PARITY_QUERIES[:2])
    ]
    monkeypatch.setattr(sqlsource, "_run_shared", lambda *args: pytest.fail("shared"))
    results = evaluate(rules, False, settings)
    assert outcome(results[rules[0].pk]) == [({}, 6.0, tenant_a.pk)]


# --- merged passes: rules grouping by the same expressions, one pass over the view -------

WINDOW = "timestamp > now() - interval '5 minutes'"

MERGEABLE = [
    f"SELECT count(*) AS value FROM events WHERE event_type = 'error' AND {WINDOW}",
    f"SELECT service_id, count(*) AS value FROM events WHERE severity = 'error' AND {WINDOW} "
    "GROUP BY service_id",
    f"SELECT e.service_id, max(e.timestamp) - min(e.timestamp) AS spread, 1 AS one "
    f"FROM events e WHERE e.{WINDOW} GROUP BY 1",
    f"SELECT data->>'endpoint' AS endpoint, service_id, count(DISTINCT id) AS value "
    f"FROM events WHERE {WINDOW} GROUP BY data->>'endpoint', service_id",
]

NOT_MERGEABLE = [
    f"SELECT 1 AS value FROM events WHERE {WINDOW}",  # not an aggregate
    f"SELECT * FROM events WHERE {WINDOW}",
    f"SELECT service_id, count(*) FROM events WHERE {WINDOW} GROUP BY service_id HAVING count(*) > 1",
    f"SELECT service_id, count(*) FROM events WHERE {WINDOW} GROUP BY service_id ORDER BY 2 LIMIT 3",
    f"SELECT DISTINCT service_id FROM events WHERE {WINDOW}",
    f"SELECT upper(service_id), count(*) FROM events WHERE {WINDOW} GROUP BY service_id",
    f"SELECT data->>'endpoint' AS ep, count(*) FROM events WHERE {WINDOW} GROUP BY ep",
    f"SELECT count(*) FILTER (WHERE severity = 'error') FROM events WHERE {WINDOW}",
    f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id) FROM events WHERE {WINDOW}",
    f"SELECT count(*) FROM events e JOIN causality c ON c.effect_id = e.id WHERE e.{WINDOW} "
    "AND c.detected_at > now() - interval '5 minutes'",
    f"SELECT count(*) FROM events WHERE {WINDOW} AND service_id IN "
    f"(SELECT service_id FROM events WHERE {WINDOW})",
]


@pytest.mark.parametrize("query", MERGEABLE)
def test_one_view_aggregates_can_join_a_merged_pass(query):
    merge = compiled(query).merge
    assert merge is not None and merge.key[0] == "events"
    assert all("FILTER(WHERE" in sql for kind, sql in merge.items if kind == "value" and sql != "1")


@pytest.mark.parametrize("query", NOT_MERGEABLE)
def test_other_shapes_do_not_join_a_merged_pass(query):
    assert compiled(query).merge is None


#: Rules of two merge keys (none and service_id) with rows for some and not others.
MERGED_RULES = [
    f"SELECT count(*) AS value FROM events WHERE event_type = 'error' AND {WINDOW}",
    f"SELECT count(*) AS value, sum(id) AS ids FROM events WHERE event_type = 'nope' AND {WINDOW}",
    f"SELECT max(timestamp) AS last, avg(length(message)) AS value FROM events WHERE {WINDOW}",
    f"SELECT service_id, count(*) AS value FROM events WHERE severity = 'error' AND {WINDOW} "
    "GROUP BY service_id",
    f"SELECT count(*) AS value, service_id FROM events WHERE event_type = 'deploy' AND "
    f"{WINDOW} GROUP BY service_id",
    f"SELECT e.service_id, count(DISTINCT e.data->>'endpoint') AS value, 1 AS one "
    f"FROM events e WHERE e.{WINDOW} AND e.service_id = 'search' GROUP BY 1",
    f"SELECT service_id, count(*) AS value FROM events WHERE event_type = 'nope' AND {WINDOW} "
    "GROUP BY service_id",
]


@pytest.mark.django_db
def test_a_merged_pass_gives_exactly_what_each_rule_gives_alone(data, settings, monkeypatch):
    tenant_a, _ = data
    rules = [make_rule(tenant_a, name=f"m{i}", query=q) for i, q in enumerate(MERGED_RULES)]
    assert all(compiled(rule.query).merge for rule in rules)
    calls = spy_on_statements(monkeypatch)
    alone = evaluate(rules, False, settings)
    together = evaluate(rules, True, settings)
    assert sorted(calls) == [("merged", 3), ("merged", 4)]
    for rule in rules:
        assert outcome(together[rule.pk]) == outcome(alone[rule.pk]), rule.query
    counts = [outcome(alone[rule.pk]) for rule in rules]
    assert counts[0] == [({}, 6.0, tenant_a.pk)]
    assert counts[1] == [({}, 0.0, tenant_a.pk)]  # an aggregate over nothing is still a row
    assert counts[3] == [
        ({"service_id": "checkout"}, 5.0, tenant_a.pk),
        ({"service_id": "search"}, 1.0, tenant_a.pk),
    ]
    assert counts[4] == [({"service_id": "checkout"}, 1.0, tenant_a.pk)]
    assert counts[5] == [({"one": "1", "service_id": "search"}, 1.0, tenant_a.pk)]
    assert counts[6] == []  # no group for a rule whose rows are all filtered out


@pytest.mark.django_db
def test_a_failing_merged_pass_falls_back_and_isolates_the_failing_rule(data, settings):
    tenant_a, _ = data
    good = make_rule(tenant_a, name="good", query=MERGED_RULES[0])
    bad = make_rule(
        tenant_a,
        name="bad",
        query=f"SELECT 1 / (count(*) - count(*)) AS value FROM events WHERE {WINDOW}",
    )
    results = evaluate([good, bad], True, settings)
    assert outcome(results[good.pk]) == [({}, 6.0, tenant_a.pk)]
    assert outcome(results[bad.pk])[1].startswith("the query failed: division by zero")


@pytest.mark.django_db
def test_a_query_failing_while_planned_does_not_fail_its_neighbours(data, settings):
    tenant_a, _ = data
    rows = f"SELECT service_id, 1 AS value FROM events WHERE {WINDOW} AND event_type = 'deploy'"
    bad = make_rule(
        tenant_a, name="bad", query=f"SELECT service_id, 1 / 0 AS value FROM events WHERE {WINDOW}"
    )
    good = [make_rule(tenant_a, name=f"good{i}", query=rows) for i in range(2)]
    for rules in ([bad, *good], [*good, bad]):
        results = evaluate(rules, True, settings)
        for rule in good:
            assert outcome(results[rule.pk]) == [({"service_id": "checkout"}, 1.0, tenant_a.pk)]
        assert outcome(results[bad.pk])[1].startswith("the query failed: division by zero")


@pytest.mark.django_db
def test_a_group_that_timed_out_runs_in_the_next_tier_for_a_while(data, monkeypatch):
    tenant_a, _ = data
    rules = [make_rule(tenant_a, name=f"m{i}", query=q) for i, q in enumerate(MERGED_RULES[:3])]
    compiled_ = {rule.pk: compiled(rule.query) for rule in rules}
    monkeypatch.setattr(sqlsource, "_TIMED_OUT", {})
    merged_runs = []

    def once(run):
        def slow_merged_pass(sql, params, types=False):
            if "FILTER (WHERE" in sql and '"__trv_n0"' in sql:
                merged_runs.append(sql)
                raise sqlsource.QueryError(
                    "the query was cancelled after ALERT_SQL_TIMEOUT_MS=5000 ms"
                )
            return run(sql, params, types=types)

        results = {}
        alone = sqlsource._run_together(slow_merged_pass, tenant_a.pk, rules, compiled_, results)
        return results, alone

    for attempt in (1, 2):
        with sqlsource.sandbox() as run:
            results, alone = once(run)
        # The three rules got their results from the shared-scan statement instead.
        assert alone == [] and sorted(results) == sorted(rule.pk for rule in rules)
        assert outcome(results[rules[0].pk]) == [({}, 6.0, tenant_a.pk)]
        assert len(merged_runs) == 1, attempt  # tried once, then left out
    assert list(sqlsource._TIMED_OUT) == [(tenant_a.pk, "merged", compiled_[rules[0].pk].merge.key)]
