"""The exported Prometheus rules file passes promtool (Debian `prometheus` package)."""

from __future__ import annotations

import subprocess
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command

from alerts.choices import Datasource, Severity
from alerts.models import AlertRule
from alerts.rulepack import PACK
from conftest import require_binary

DEPLOY = Path(settings.BASE_DIR) / "deploy" / "prometheus"
COMMITTED = DEPLOY / "alerts.yml"
TESTS = sorted((DEPLOY / "tests").glob("*.yml"))

pytestmark = pytest.mark.django_db


@pytest.fixture
def pack(settings):
    settings.PUBLIC_URL = "http://127.0.0.1:8000"  # the committed file's runbook links
    settings.SLACK_WEBHOOK = ""
    settings.PAGERDUTY_KEY = ""
    settings.ALERT_TO_EMAIL = []
    call_command("load_default_rules", stdout=StringIO())


def export(tmp_path) -> Path:
    target = tmp_path / "alerts.yml"
    out = StringIO()
    call_command("export_prometheus_rules", output=str(target), stdout=out)
    exported = AlertRule.objects.filter(
        tenant__isnull=True, enabled=True, datasource=Datasource.PROMETHEUS
    ).count()
    assert f"wrote {exported} rules to {target}" in out.getvalue()
    return target


def test_the_committed_rules_file_is_the_export_of_the_pack(pack, tmp_path):
    assert export(tmp_path).read_text() == COMMITTED.read_text(), (
        "deploy/prometheus/alerts.yml is stale: run manage.py export_prometheus_rules"
    )


def test_promtool_check_rules_accepts_the_export(pack, tmp_path):
    promtool = require_binary("promtool")
    target = export(tmp_path)
    result = subprocess.run(
        [promtool, "check", "rules", str(target)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(1 for r in PACK if r.datasource == Datasource.PROMETHEUS)
    assert f"SUCCESS: {count} rules found" in result.stdout + result.stderr


def test_promtool_unit_tests_pass_and_cover_the_critical_rules(pack):
    promtool = require_binary("promtool")
    assert TESTS, "deploy/prometheus/tests/*.yml"
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DEPLOY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)
    tested = {
        case["alertname"]
        for path in TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")  # a test that sees the alert fire, not only stay quiet
    }
    critical = {
        r.name
        for r in PACK
        if r.severity == Severity.CRITICAL and r.datasource == Datasource.PROMETHEUS
    }
    assert critical <= tested, critical - tested


def test_the_export_translates_a_custom_rule(pack, tmp_path):
    AlertRule.objects.create(
        name="custom_queue_stuck",
        datasource=Datasource.PROMETHEUS,
        query="max by (queue) (traversion_celery_queue_length)",
        condition_operator=">=",
        threshold=2.5,
        for_duration=90_000,
        keep_firing_for=1_500,
        labels={"team": "ops"},
        annotations={
            "summary": "{{ labels.queue }} at {{ value }} ({{ alertname }}, {{ severity }})"
        },
        severity=Severity.INFO,
    )
    AlertRule.objects.create(
        name="disabled_one", datasource=Datasource.PROMETHEUS, query="up", enabled=False
    )
    document = yaml.safe_load(export(tmp_path).read_text())
    rules = {r["alert"]: r for r in document["groups"][0]["rules"]}
    assert "disabled_one" not in rules
    assert rules["custom_queue_stuck"] == {
        "alert": "custom_queue_stuck",
        "expr": "(max by (queue) (traversion_celery_queue_length)) >= 2.5",
        "for": "90s",
        "keep_firing_for": "1500ms",
        "labels": {"team": "ops", "severity": "info"},
        "annotations": {
            "summary": "{{ $labels.queue }} at {{ $value }} ({{ $labels.alertname }}, info)"
        },
    }
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "alerts.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_template_without_a_prometheus_equivalent_is_refused(pack, tmp_path):
    AlertRule.objects.create(
        name="custom_loop",
        datasource=Datasource.PROMETHEUS,
        query="up",
        annotations={"summary": "{% for k in labels %}{{ k }}{% endfor %}"},
    )
    with pytest.raises(CommandError, match="custom_loop: template tags"):
        export(tmp_path)
