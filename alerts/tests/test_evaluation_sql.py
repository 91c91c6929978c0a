"""SQL rules evaluated for real on PostgreSQL: the views, tenant scoping, global rules,
values and labels, and the runner's history and metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.choices import RuleHealth
from alerts.evaluation import QueryError, get_datasource
from alerts.evaluation.runner import evaluate_rules
from alerts.models import AlertInstance
from metrics.catalogue import ALERT_EVALUATION_DURATION, ALERT_EVALUATIONS
from tenants.models import AuditEvent

from .engine_helpers import history, ledger, make_channel, make_rule, refresh

pytestmark = pytest.mark.django_db

SQL = get_datasource("sql")


def login(tenant, username, result, ip="10.0.0.1", minutes_ago=1):
    return AuditEvent.objects.create(
        tenant=tenant,
        actor=username,
        action="auth.login",
        method="jwt",
        result=result,
        ip_address=ip,
        timestamp=timezone.now() - timedelta(minutes=minutes_ago),
    )


@pytest.fixture
def logins(tenant_a, tenant_b):
    for i in range(4):
        login(tenant_a, f"alice{i}", "failure", ip="10.0.0.1")
    login(tenant_a, "bob", "failure", ip="10.0.0.2")
    login(tenant_a, "bob", "success", ip="10.0.0.2")
    login(tenant_a, "old", "failure", ip="10.0.0.9", minutes_ago=60)
    for i in range(7):
        login(tenant_b, f"eve{i}", "failure", ip="10.9.9.9")
    AuditEvent.objects.create(tenant=tenant_a, actor="x", action="security.cross_tenant_access")


FAILURES_BY_IP = (
    "SELECT ip_address, count(*) AS value FROM auth_attempts "
    "WHERE result = 'failure' AND timestamp > now() - interval '10 minutes' "
    "GROUP BY ip_address ORDER BY ip_address"
)


def values(samples):
    return sorted((tuple(sorted(s.labels.items())), s.value, s.tenant_id) for s in samples)


def test_a_tenant_rule_sees_only_its_tenants_rows(tenant_a, logins):
    rule = make_rule(tenant_a, query=FAILURES_BY_IP)
    assert values(SQL.evaluate(rule)) == [
        ((("ip_address", "10.0.0.1"),), 4.0, tenant_a.pk),
        ((("ip_address", "10.0.0.2"),), 1.0, tenant_a.pk),
    ]


def test_a_global_rule_sees_every_tenant_and_needs_tenant_id(tenant_a, tenant_b, logins):
    rule = make_rule(
        None,
        name="failures",
        query="SELECT tenant_id, count(*) AS value FROM auth_attempts WHERE result = 'failure' "
        "AND timestamp > now() - interval '10 minutes' GROUP BY tenant_id",
    )
    assert values(SQL.evaluate(rule)) == [((), 5.0, tenant_a.pk), ((), 7.0, tenant_b.pk)]

    rule.query = "SELECT count(*) AS value FROM auth_attempts"
    with pytest.raises(QueryError, match="a global rule's query must return a tenant_id column"):
        SQL.evaluate(rule)


def test_a_tenant_rule_cannot_claim_another_tenant_with_a_tenant_id_column(tenant_a, tenant_b):
    rule = make_rule(tenant_a, query=f"SELECT {tenant_b.pk} AS tenant_id, 99 AS value")
    assert values(SQL.evaluate(rule)) == [((), 99.0, tenant_a.pk)]


def test_value_column_and_labels(tenant_a, logins):
    rule = make_rule(
        tenant_a,
        query="SELECT username, count(*) AS n, max(ip_address) AS ip, NULL AS nothing, "
        "jsonb_build_object('k', 1) IS NULL AS flag FROM auth_attempts "
        "WHERE username = 'bob' GROUP BY username",
    )
    with pytest.raises(QueryError, match="jsonb_build_object"):
        SQL.validate(rule.query)
    rule.query = (
        "SELECT username, count(*) AS n, max(ip_address) AS ip, NULL AS nothing "
        "FROM auth_attempts WHERE username = 'bob' GROUP BY username"
    )
    # No `value` column: the first numeric one (n) is the value, the rest are labels,
    # and NULL labels are dropped.
    assert values(SQL.evaluate(rule)) == [
        ((("ip", "10.0.0.2"), ("username", "bob")), 2.0, tenant_a.pk)
    ]


def test_a_threshold_without_a_numeric_column_is_an_error(tenant_a, logins):
    rule = make_rule(tenant_a, query="SELECT DISTINCT username FROM auth_attempts")
    with pytest.raises(QueryError, match="no numeric column to compare with the threshold"):
        SQL.evaluate(rule)


def test_too_many_rows_is_an_error(tenant_a):
    rule = make_rule(
        tenant_a, condition_operator="", threshold=None,
        query="SELECT g AS value FROM generate_series(1, 10001) AS g",
    )  # fmt: skip
    with pytest.raises(QueryError, match="more than 10000 rows"):
        SQL.evaluate(rule)


def test_the_guides_own_example_is_refused_with_a_reason():
    guide = (
        "SELECT AVG(duration) FROM requests WHERE timestamp > NOW() - INTERVAL '5m' "
        "HAVING AVG(duration) > 1000"
    )
    with pytest.raises(QueryError) as caught:
        SQL.validate(guide)
    assert str(caught.value) == (
        "unknown table requests; allowed: events, causality, audit_log, auth_attempts"
    )


def test_the_events_and_causality_views(tenant_a, tenant_b):
    from events.models import CausalLink, Event

    now = timezone.now()

    def event(tenant, event_type, **attributes):
        return Event.objects.create(
            tenant=tenant, timestamp=now - timedelta(seconds=30), service_id="checkout",
            event_type=event_type, severity="error", message="boom", attributes=attributes,
        )  # fmt: skip

    deploy = event(tenant_a, "deploy", version="1.2")
    for _ in range(3):
        error = event(tenant_a, "error", endpoint="/pay")
        CausalLink.objects.create(
            tenant=tenant_a, cause=deploy, effect=error, causality_type="deployment", confidence=0.9
        )
    event(tenant_b, "error", endpoint="/pay")
    rule = make_rule(
        tenant_a,
        query="SELECT e.service_id, e.data->>'endpoint' AS endpoint, count(*) AS value, "
        "max(c.confidence) AS confidence FROM events e JOIN causality c ON c.effect_id = e.id "
        "WHERE e.event_type = 'error' AND e.timestamp > now() - interval '5 minutes' "
        "GROUP BY 1, 2",
    )
    assert values(SQL.evaluate(rule)) == [
        (
            (("confidence", "0.9"), ("endpoint", "/pay"), ("service_id", "checkout")),
            3.0,
            tenant_a.pk,
        )
    ]


def test_the_runner_applies_results_records_history_and_counts(tenant_a, logins):
    hook = make_channel(tenant_a)
    rule = make_rule(tenant_a, [hook], query=FAILURES_BY_IP, threshold=3)
    broken = make_rule(
        tenant_a,
        [hook],
        name="broken",
        query="SELECT count(*) AS value FROM audit_log WHERE 1/0 = 1",
    )
    label = str(tenant_a.pk)
    before = {
        result: ALERT_EVALUATIONS.labels(tenant_id=label, result=result)._value.get()
        for result in ("firing", "error", "ok")
    }
    observed = ALERT_EVALUATION_DURATION._sum.get(), _count(ALERT_EVALUATION_DURATION)

    outcomes = {o.rule_id: o for o in evaluate_rules([rule.pk, broken.pk])}

    assert (outcomes[rule.pk].result, outcomes[rule.pk].events) == ("firing", 1)
    assert outcomes[broken.pk].result == "error"
    (instance,) = AlertInstance.objects.filter(rule=rule)
    assert (instance.labels, instance.value, instance.state) == (
        {"ip_address": "10.0.0.1"},
        4,
        "firing",
    )
    assert history(rule) == [("firing", "inactive", "firing")]
    assert ledger(rule) == [("firing", "queued", "hook")]
    assert refresh(rule).health == RuleHealth.OK
    broken = refresh(broken)
    assert broken.health == RuleHealth.ERROR
    assert broken.last_error == "the query failed: division by zero"
    after = {
        result: ALERT_EVALUATIONS.labels(tenant_id=label, result=result)._value.get()
        for result in ("firing", "error", "ok")
    }
    assert {k: after[k] - before[k] for k in after} == {"firing": 1, "error": 1, "ok": 0}
    assert _count(ALERT_EVALUATION_DURATION) - observed[1] == 2
    assert ALERT_EVALUATION_DURATION._sum.get() > observed[0]


def _count(histogram) -> float:
    return sum(bucket.get() for bucket in histogram._buckets)


def test_disabled_and_external_rules_are_not_evaluated(tenant_a):
    disabled = make_rule(tenant_a, name="off", enabled=False)
    external = make_rule(tenant_a, name="pushed", datasource="external", query="")
    assert evaluate_rules([disabled.pk, external.pk]) == []


def test_a_batch_reads_its_tenant_once_and_shares_it(tenant_a, django_assert_num_queries):
    from alerts.evaluation.runner import _load

    rules = [
        make_rule(tenant_a, name=f"r{i}", query="SELECT count(*) AS value FROM events")
        for i in range(5)
    ]
    with django_assert_num_queries(2):  # the rules, then their tenant
        loaded = _load(rule.pk for rule in rules)
    assert [rule.pk for rule in loaded] == sorted(rule.pk for rule in rules)
    assert all(rule.tenant is loaded[0].tenant for rule in loaded)
    assert loaded[0].tenant.pk == tenant_a.pk


def test_a_rule_whose_tenant_vanished_between_the_reads_is_left_out(tenant_a, monkeypatch):
    from alerts.evaluation import runner
    from tenants.models import Tenant

    rule = make_rule(tenant_a, query="SELECT count(*) AS value FROM events")
    monkeypatch.setattr(Tenant.objects, "in_bulk", lambda ids: {})
    assert runner._load([rule.pk]) == []
