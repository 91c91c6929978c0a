"""The default rule pack: its rules, `load_default_rules`, the runbooks, and the SQL rules
firing on real audit data."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from alerts.choices import Datasource, Severity
from alerts.evaluation.runner import evaluate_rules
from alerts.models import AlertInstance, AlertRule, NotificationChannel
from alerts.rulepack import PACK
from tenants.models import AuditEvent

from .engine_helpers import make_channel

NAMES = [
    "traversion_api_down",
    "traversion_database_down",
    "traversion_redis_down",
    "traversion_high_error_rate",
    "traversion_high_latency_p95",
    "traversion_auth_failure_spike",
    "traversion_brute_force",
    "traversion_suspicious_ip",
    "traversion_permission_violations",
    "traversion_cross_tenant_access",
    "traversion_high_memory",
    "traversion_high_cpu",
    "traversion_slow_queries",
    "traversion_low_disk_space",
    "traversion_event_ingestion_lag",
    "traversion_slow_causality_detection",
    "traversion_tenant_storage_quota",
    "traversion_notification_delivery_failing",
    "traversion_rule_evaluation_errors",
    "traversion_celery_queue_backlog",
]
RUNBOOKS = Path(settings.BASE_DIR) / "docs" / "runbooks.md"


def load() -> str:
    out = StringIO()
    call_command("load_default_rules", stdout=out, stderr=out)
    return out.getvalue()


def test_the_pack_has_every_rule_of_the_design_named_as_there():
    assert [rule.name for rule in PACK] == NAMES
    for rule in PACK:
        assert rule.severity in Severity.values
        assert rule.summary and rule.description and rule.query
        assert rule.runbook_url == f"{settings.PUBLIC_URL}/docs/runbooks/#{rule.name}"
    # The guide's thresholds.
    by_name = {rule.name: rule for rule in PACK}
    assert (
        by_name["traversion_high_error_rate"].threshold,
        by_name["traversion_high_error_rate"].for_ms,
    ) == (0.05, 120_000)
    assert by_name["traversion_permission_violations"].threshold == 20
    assert (
        by_name["traversion_high_memory"].threshold,
        by_name["traversion_high_memory"].for_ms,
    ) == (0.85, 300_000)
    assert by_name["traversion_low_disk_space"].threshold == 0.2
    assert by_name["traversion_tenant_storage_quota"].threshold == 0.9
    assert by_name["traversion_slow_queries"].threshold == 5
    assert by_name["traversion_database_down"].for_ms == 30_000


def test_every_runbook_link_has_its_section():
    anchors = re.findall(r"^## (\S+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    assert anchors == NAMES


def metric_names(query: str) -> set[str]:
    names = set(re.findall(r"\b(traversion_[a-z_]+|node_[a-z_]+|up)\b(?=[{\[)\s])", query + " "))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith("_bucket") else n for n in names}


def test_promql_reads_only_families_the_app_emits():
    from metrics.catalogue import FAMILIES
    from metrics.collectors import REGISTRY

    emitted = set(FAMILIES) | set(REGISTRY)
    for rule in PACK:
        if rule.datasource != Datasource.PROMETHEUS:
            continue
        names = metric_names(rule.query)
        assert names, rule.name
        ours = {n for n in names if n.startswith("traversion_")}
        assert ours <= emitted, (rule.name, ours - emitted)
        # Exporter metrics only where the app cannot know (disk, machine memory, scrapes).
        assert names - ours <= {
            "up",
            "node_filesystem_avail_bytes",
            "node_filesystem_size_bytes",
            "node_memory_MemTotal_bytes",
        }, rule.name


@pytest.mark.django_db
def test_load_creates_every_rule_valid_builtin_and_on_the_global_channels(settings):
    settings.SLACK_WEBHOOK = "http://127.0.0.1:9/slack"
    tenant_channel = None
    output = load()
    assert "default rules: 20 created, 0 updated, 0 unchanged, 0 skipped" in output
    slack = NotificationChannel.objects.get(name="default-slack", tenant__isnull=True)
    rules = AlertRule.objects.filter(tenant__isnull=True).order_by("pk")
    assert [r.name for r in rules] == NAMES
    for rule in rules:
        rule.full_clean()  # the SQL sandbox and the templates accept every rule
        assert (rule.builtin, rule.enabled, rule.health) == (True, True, "unknown")
        assert list(rule.channels.all()) == [slack]
        assert rule.annotations["summary"] and rule.runbook_url.endswith("#" + rule.name)
    assert tenant_channel is None


@pytest.mark.django_db
def test_load_is_idempotent_and_keeps_the_operators_choices(tenant_a):
    load()
    ops = make_channel(None, name="ops")
    rule = AlertRule.objects.get(name="traversion_brute_force")
    rule.enabled = False
    rule.cooldown = 42_000
    rule.threshold = 99  # a definition edit: the pack's value comes back
    rule.save()
    rule.channels.set([ops])

    output = load()

    assert "default rules: 0 created, 1 updated, 19 unchanged, 0 skipped" in output
    rule.refresh_from_db()
    assert (rule.enabled, rule.cooldown, rule.threshold) == (False, 42_000, 10)
    assert list(rule.channels.all()) == [ops]
    assert AlertRule.objects.filter(tenant__isnull=True).count() == 20
    assert "0 created, 0 updated, 20 unchanged" in load()


@pytest.mark.django_db
def test_a_global_rule_of_the_same_name_that_is_not_built_in_is_left_alone():
    AlertRule.objects.create(name="traversion_high_cpu", query="up", datasource="prometheus")
    output = load()
    assert "1 skipped" in output
    assert "traversion_high_cpu: a global rule of that name exists and is not built in" in output
    assert AlertRule.objects.get(name="traversion_high_cpu").query == "up"


@pytest.mark.django_db
def test_the_sql_rules_of_the_pack_fire_on_audit_data(tenant_a, tenant_b):
    load()
    now = timezone.now()
    for i in range(12):  # 12 accounts of tenant A fail: a spray
        AuditEvent.objects.create(
            tenant=tenant_a, actor=f"user{i}", action="auth.login", method="jwt",
            result="failure", ip_address="198.51.100.7", timestamp=now - timedelta(minutes=2),
        )  # fmt: skip
    for _ in range(3):  # tenant B: one user mistyping
        AuditEvent.objects.create(
            tenant=tenant_b, actor="bob", action="auth.login", result="failure", method="jwt"
        )
    for _ in range(21):
        AuditEvent.objects.create(
            tenant=tenant_b, actor="viewer", action="security.permission_denied"
        )
    AuditEvent.objects.create(
        tenant=tenant_a, actor="mallory", action="security.cross_tenant_access"
    )
    sql_rules = AlertRule.objects.filter(tenant__isnull=True, datasource=Datasource.SQL)

    outcomes = evaluate_rules(sql_rules.values_list("pk", flat=True))

    assert {o.result for o in outcomes} == {"firing"}
    firing = {
        (i.rule.name, i.tenant.slug, i.value, tuple(sorted(i.labels.items())))
        for i in AlertInstance.objects.filter(state="firing").select_related("rule", "tenant")
    }
    assert firing == {
        ("traversion_brute_force", "alpha", 12, (("tenant_id", str(tenant_a.pk)),)),
        ("traversion_permission_violations", "beta", 21, (("tenant_id", str(tenant_b.pk)),)),
        (
            "traversion_cross_tenant_access",
            "alpha",
            1,
            (("actor", "mallory"), ("tenant_id", str(tenant_a.pk))),
        ),
    }
    summary = AlertInstance.objects.get(rule__name="traversion_cross_tenant_access").annotations
    assert summary["summary"] == "1 cross-tenant access attempts by mallory"


@pytest.mark.django_db
def test_the_runbooks_page_serves_an_anchor_per_rule(client):
    response = client.get("/docs/runbooks/")
    assert response.status_code == 200
    body = response.content.decode()
    for name in NAMES:
        assert f'<h2 id="{name}">{name}</h2>' in body
