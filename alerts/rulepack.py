"""The default rule pack: the guide's alerts, as rules of this engine.

Each rule has a severity, a summary and a description (templates over the instance's
labels and value), a runbook (docs/runbooks.md has one section per rule, served at
/docs/runbooks/), and a query:

- `prometheus` rules are PromQL over the `traversion_*` families of DESIGN §Metrics
  (node exporter metrics only for disk and total memory, which the app cannot see).
  `query` is the value; the condition (operator, threshold, `for`) is separate, so the
  test-firing API can check `testData` against it, and `export_prometheus_rules` joins
  them into `(query) > threshold` for Prometheus.
- `sql` rules read the audit log views, where the facts are (who failed to log in,
  who tried another tenant's data); they work without Prometheus, in the embedded
  default too. They are global: they see every tenant and group by `tenant_id`, so each
  tenant's alert also goes to that tenant's channels.

`manage.py load_default_rules` writes them (alerts/management/commands).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from .choices import Datasource, Severity

#: The Prometheus job that scrapes the web application (deploy/prometheus/prometheus.yml).
WEB_JOB = "traversion-web"
RUNBOOKS_PATH = "/docs/runbooks/"
# File systems that are not disks.
PSEUDO_FS = 'fstype!~"tmpfs|overlay|squashfs|ramfs|devtmpfs"'


@dataclass(frozen=True)
class PackRule:
    name: str
    severity: str
    summary: str
    description: str
    datasource: str
    query: str
    operator: str = ""
    threshold: float | None = None
    for_ms: int = 0
    interval_ms: int | None = None
    labels: dict = field(default_factory=dict)

    @property
    def runbook_url(self) -> str:
        return f"{settings.PUBLIC_URL}{RUNBOOKS_PATH}#{self.name}"

    def fields(self) -> dict:
        """The AlertRule fields the pack owns (see load_default_rules)."""
        return {
            "severity": self.severity,
            "description": self.description,
            "runbook_url": self.runbook_url,
            "datasource": self.datasource,
            "query": self.query,
            "condition_operator": self.operator,
            "threshold": self.threshold,
            "for_duration": self.for_ms,
            "keep_firing_for": 0,
            "evaluation_interval": self.interval_ms,
            "labels": dict(self.labels),
            "annotations": {"summary": self.summary, "description": self.description},
        }


SECOND, MINUTE = 1_000, 60_000
PROM, SQL = Datasource.PROMETHEUS, Datasource.SQL

PACK: tuple[PackRule, ...] = (
    # --- availability -------------------------------------------------------------
    PackRule(
        name="traversion_api_down",
        severity=Severity.CRITICAL,
        summary="Traversion API is down ({{ labels.instance }})",
        description="Prometheus could not scrape the web application for more than 1 "
        "minute: the API and the admin are unavailable.",
        datasource=PROM,
        query=f'up{{job="{WEB_JOB}"}}',
        operator="==",
        threshold=0,
        for_ms=1 * MINUTE,
    ),
    PackRule(
        name="traversion_database_down",
        severity=Severity.CRITICAL,
        summary="PostgreSQL is unreachable",
        description="The application's database check has failed for 30 seconds: "
        "ingestion, the API and rule evaluation are failing.",
        datasource=PROM,
        query='min by (dependency) (traversion_dependency_up{dependency="postgres"})',
        operator="<",
        threshold=1,
        for_ms=30 * SECOND,
    ),
    PackRule(
        name="traversion_redis_down",
        severity=Severity.CRITICAL,
        summary="Redis is unreachable",
        description="The application's Redis check has failed for 1 minute: Celery tasks "
        "(evaluation, delivery) and the live board are stalled.",
        datasource=PROM,
        query='min by (dependency) (traversion_dependency_up{dependency="redis"})',
        operator="<",
        threshold=1,
        for_ms=1 * MINUTE,
    ),
    # --- API -------------------------------------------------------------------------
    PackRule(
        name="traversion_high_error_rate",
        severity=Severity.CRITICAL,
        summary="{{ value|floatformat:3 }} of API responses are 5xx",
        description="More than 5% of HTTP responses have been server errors for 2 minutes.",
        datasource=PROM,
        query='(sum(rate(traversion_http_requests_total{status_code=~"5.."}[5m])) or vector(0))'
        " / sum(rate(traversion_http_requests_total[5m]))",
        operator=">",
        threshold=0.05,
        for_ms=2 * MINUTE,
    ),
    PackRule(
        name="traversion_high_latency_p95",
        severity=Severity.WARNING,
        summary="API p95 latency is {{ value|floatformat:2 }} s",
        description="The 95th percentile of HTTP request duration has been above 1 s "
        "for 5 minutes.",
        datasource=PROM,
        query="histogram_quantile(0.95, sum by (le) "
        "(rate(traversion_http_request_duration_seconds_bucket[5m])))",
        operator=">",
        threshold=1,
        for_ms=5 * MINUTE,
    ),
    # --- security ----------------------------------------------------------------------
    PackRule(
        name="traversion_auth_failure_spike",
        severity=Severity.CRITICAL,
        summary="{{ value|floatformat:1 }} failed logins per second",
        description="More than 10 failed logins per second for 1 minute, across all "
        "authentication methods.",
        datasource=PROM,
        query='sum(rate(traversion_auth_attempts_total{result="failure"}[1m])) or vector(0)',
        operator=">",
        threshold=10,
        for_ms=1 * MINUTE,
    ),
    PackRule(
        name="traversion_brute_force",
        severity=Severity.SECURITY,
        summary="Failed logins on {{ value|floatformat:0 }} accounts in 10 minutes",
        description="Failed logins for at least 10 different accounts of one tenant "
        "within 10 minutes: a coordinated attack (credential stuffing or password "
        "spraying) rather than one user's typo.",
        datasource=SQL,
        query="SELECT tenant_id, count(DISTINCT username) AS value FROM auth_attempts "
        "WHERE result = 'failure' AND timestamp > now() - interval '10 minutes' "
        "GROUP BY tenant_id",
        operator=">=",
        threshold=10,
        interval_ms=1 * MINUTE,
    ),
    PackRule(
        name="traversion_suspicious_ip",
        severity=Severity.WARNING,
        summary="{{ value|floatformat:1 }} failed logins per second from {{ labels.ip_address }}",
        description="One client address has failed more than 5 logins per second for 1 minute.",
        datasource=PROM,
        query='sum by (ip_address) (rate(traversion_auth_failures_by_ip_total{ip_address!="other"}[1m]))',
        operator=">",
        threshold=5,
        for_ms=1 * MINUTE,
    ),
    PackRule(
        name="traversion_permission_violations",
        severity=Severity.SECURITY,
        summary="{{ value|floatformat:0 }} permission violations in 10 minutes",
        description="More than 20 requests of one tenant were refused for lack of "
        "permission within 10 minutes: a misconfigured integration or someone probing.",
        datasource=SQL,
        query="SELECT tenant_id, count(*) AS value FROM audit_log "
        "WHERE action = 'security.permission_denied' "
        "AND timestamp > now() - interval '10 minutes' GROUP BY tenant_id",
        operator=">",
        threshold=20,
        interval_ms=1 * MINUTE,
    ),
    PackRule(
        name="traversion_cross_tenant_access",
        severity=Severity.SECURITY,
        summary="{{ value|floatformat:0 }} cross-tenant access attempts by {{ labels.actor }}",
        description="A request tried to read or change another tenant's data. It was "
        "refused; find out who and why.",
        datasource=SQL,
        query="SELECT tenant_id, actor, count(*) AS value FROM audit_log "
        "WHERE action = 'security.cross_tenant_access' "
        "AND timestamp > now() - interval '5 minutes' GROUP BY tenant_id, actor",
        operator=">",
        threshold=0,
        interval_ms=1 * MINUTE,
    ),
    # --- resources -----------------------------------------------------------------------
    PackRule(
        name="traversion_high_memory",
        severity=Severity.WARNING,
        summary="Traversion uses {{ value|floatformat:2 }} of the machine's memory",
        description="The resident memory of the application processes has been above "
        "85% of the machine's memory for 5 minutes.",
        datasource=PROM,
        query='sum(traversion_memory_usage_bytes{type="rss"}) '
        "/ scalar(sum(node_memory_MemTotal_bytes))",
        operator=">",
        threshold=0.85,
        for_ms=5 * MINUTE,
    ),
    PackRule(
        name="traversion_high_cpu",
        severity=Severity.WARNING,
        summary="Traversion CPU usage is {{ value|floatformat:0 }}%",
        description="The application processes have used more than 80% of the "
        "machine's CPU for 10 minutes.",
        datasource=PROM,
        query="max(traversion_cpu_usage_percent)",
        operator=">",
        threshold=80,
        for_ms=10 * MINUTE,
    ),
    PackRule(
        name="traversion_slow_queries",
        severity=Severity.WARNING,
        summary="Query p95 is {{ value|floatformat:1 }} s",
        description="The 95th percentile of query duration has been above 5 seconds for 5 minutes.",
        datasource=PROM,
        query="histogram_quantile(0.95, sum by (le) "
        "(rate(traversion_query_duration_seconds_bucket[5m])))",
        operator=">",
        threshold=5,
        for_ms=5 * MINUTE,
    ),
    PackRule(
        name="traversion_low_disk_space",
        severity=Severity.WARNING,
        summary="{{ labels.mountpoint }} on {{ labels.instance }} has {{ value|floatformat:2 }} free",
        description="Less than 20% of the file system is free.",
        datasource=PROM,
        query=f"min by (instance, mountpoint) (node_filesystem_avail_bytes{{{PSEUDO_FS}}} "
        f"/ node_filesystem_size_bytes{{{PSEUDO_FS}}})",
        operator="<",
        threshold=0.2,
        for_ms=5 * MINUTE,
    ),
    # --- the platform's own pipelines ---------------------------------------------------
    PackRule(
        name="traversion_event_ingestion_lag",
        severity=Severity.WARNING,
        summary="Events of tenant {{ labels.tenant_id }} arrive {{ value|floatformat:0 }} s late",
        description="Events are still being ingested for this tenant, but the newest one "
        "stored is more than 5 minutes old: ingestion is lagging behind.",
        datasource=PROM,
        query="(time() - max by (tenant_id) (traversion_last_event_timestamp)) "
        "and on (tenant_id) (sum by (tenant_id) (rate(traversion_events_total[5m])) > 0)",
        operator=">",
        threshold=300,
        for_ms=5 * MINUTE,
    ),
    PackRule(
        name="traversion_slow_causality_detection",
        severity=Severity.WARNING,
        summary="Causality detection p95 is {{ value|floatformat:2 }} s",
        description="The 95th percentile of causality detection has been above 2 "
        "seconds for 10 minutes: root-cause links arrive late.",
        datasource=PROM,
        query="histogram_quantile(0.95, sum by (le) "
        "(rate(traversion_causality_detection_duration_seconds_bucket[5m])))",
        operator=">",
        threshold=2,
        for_ms=10 * MINUTE,
    ),
    PackRule(
        name="traversion_tenant_storage_quota",
        severity=Severity.WARNING,
        summary="Tenant {{ labels.tenant_id }} uses {{ value|floatformat:2 }} of its storage quota",
        description="The tenant has used more than 90% of its storage quota; at 100% "
        "event ingestion answers 429.",
        datasource=PROM,
        query="max by (tenant_id) (traversion_tenant_storage_usage_bytes) "
        "/ max by (tenant_id) (traversion_tenant_storage_quota_bytes)",
        operator=">",
        threshold=0.9,
        for_ms=5 * MINUTE,
    ),
    PackRule(
        name="traversion_notification_delivery_failing",
        severity=Severity.CRITICAL,
        summary="{{ value|floatformat:0 }} {{ labels.channel_type }} notifications failed in 15 minutes",
        description="Notifications through this channel type are failing for good "
        "(retries exhausted): alerts are not reaching people.",
        datasource=PROM,
        query='sum by (channel_type) (increase(traversion_alert_notifications_total{result="failed"}[15m]))'
        " or sum by (channel_type) (increase(traversion_alert_notifications_total[15m])) * 0",
        operator=">",
        threshold=0,
    ),
    PackRule(
        name="traversion_rule_evaluation_errors",
        severity=Severity.WARNING,
        summary="{{ value|floatformat:0 }} rule evaluations failed for tenant {{ labels.tenant_id }}",
        description="Rule evaluations ended in error within 10 minutes: those rules "
        "cannot fire. The rules' health and last error say why.",
        datasource=PROM,
        query='sum by (tenant_id) (increase(traversion_alert_evaluations_total{result="error"}[10m]))'
        " or sum by (tenant_id) (increase(traversion_alert_evaluations_total[10m])) * 0",
        operator=">",
        threshold=0,
        for_ms=5 * MINUTE,
    ),
    PackRule(
        name="traversion_celery_queue_backlog",
        severity=Severity.WARNING,
        summary="{{ value|floatformat:0 }} tasks waiting in Celery queue {{ labels.queue }}",
        description="More than 1000 tasks have been waiting for 10 minutes: the workers "
        "cannot keep up (evaluation and delivery are late).",
        datasource=PROM,
        query="max by (queue) (traversion_celery_queue_length)",
        operator=">",
        threshold=1000,
        for_ms=10 * MINUTE,
    ),
)

PACK_BY_NAME = {rule.name: rule for rule in PACK}
