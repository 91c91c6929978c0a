"""SQL rules in the embedded default (SQLite), in a subprocess with its own database:
the guide-style rules run, the tenant filter holds, writes and slow queries are stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import json
    from datetime import timedelta
    from django.conf import settings
    from django.utils import timezone
    from alerts.evaluation import QueryError, get_datasource
    from alerts.evaluation.runner import evaluate_rules
    from alerts.evaluation.sql import sandbox
    from alerts.models import AlertInstance, AlertRule
    from tenants.models import AuditEvent, Tenant

    a = Tenant.objects.create(slug="alpha", name="Alpha")
    b = Tenant.objects.create(slug="beta", name="Beta")
    now = timezone.now()
    for tenant, n in ((a, 4), (b, 9)):
        for i in range(n):
            AuditEvent.objects.create(tenant=tenant, actor=f"u{i}", action="auth.login",
                                      method="jwt", result="failure", ip_address="10.0.0.1")
    AuditEvent.objects.create(tenant=a, actor="old", action="auth.login", result="failure",
                              timestamp=now - timedelta(hours=2))
    AuditEvent.objects.bulk_create(
        [AuditEvent(tenant=b, actor="filler", action="tenant.updated") for _ in range(60)])
    recent = ("SELECT count(*) AS value FROM auth_attempts WHERE result = 'failure' "
              "AND timestamp > now() - interval '10 minutes'")
    rule = AlertRule.objects.create(tenant=a, name="failures", query=recent,
                                    condition_operator=">", threshold=3)
    per_tenant = AlertRule.objects.create(
        name="failures_by_tenant", condition_operator=">", threshold=5,
        query="SELECT tenant_id, count(*) AS value FROM auth_attempts "
              "WHERE result = 'failure' AND username LIKE 'u%' GROUP BY tenant_id")
    settings.ALERT_SQL_TIMEOUT_MS = 300
    slow = AlertRule.objects.create(
        tenant=b, name="slow", query="SELECT count(*) AS value FROM audit_log x, audit_log y, "
        "audit_log z, audit_log w, audit_log v", condition_operator=">", threshold=0)
    outcomes = {o.rule_id: o.result for o in evaluate_rules([rule.pk, per_tenant.pk, slow.pk])}
    slow.refresh_from_db()
    try:
        with sandbox() as run:
            run("DELETE FROM tenants_auditevent", {})
        write = "allowed"
    except QueryError as exc:
        write = str(exc)
    print("RESULT" + json.dumps({
        "outcomes": [outcomes[rule.pk], outcomes[per_tenant.pk], outcomes[slow.pk]],
        "values": sorted([i.rule.name, i.tenant.slug, i.value, i.state]
                         for i in AlertInstance.objects.select_related("rule", "tenant")),
        "slow_error": slow.last_error,
        "write": write,
        "audit_rows": AuditEvent.objects.count(),
    }))
    """
)


def test_sql_rules_on_the_embedded_sqlite_default(tmp_path):
    base = Path(settings.BASE_DIR)
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "TRAVERSION_VAR_DIR": str(tmp_path),
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "memory://",
        "SECRET_KEY": "embedded-default-test-key",
        "PROMETHEUS_MULTIPROC_DIR": "",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    manage = [sys.executable, str(base / "manage.py")]
    migrate = subprocess.run(
        [*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=base,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    run = subprocess.run(
        [*manage, "shell", "-c", SCRIPT], env=env, cwd=base,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])

    assert result["outcomes"] == ["firing", "firing", "error"]
    assert result["values"] == [
        ["failures", "alpha", 4.0, "firing"],  # the 2-hour-old failure is outside the window
        ["failures_by_tenant", "beta", 9.0, "firing"],  # alpha's 4 stay below 5
    ]
    assert result["slow_error"] == "the query was cancelled after ALERT_SQL_TIMEOUT_MS=300 ms"
    assert result["write"] == "the query tried to write: rule queries run read-only"
    assert result["audit_rows"] == 74
