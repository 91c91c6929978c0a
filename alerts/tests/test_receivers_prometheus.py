"""A real Prometheus names Traversion as its Alertmanager: its alert becomes ours.

Prometheus (Debian package) is started on a free loopback port with a rule that fires at
once (`vector(1)`, `for: 0s`, evaluated every second) and `alerting.alertmanagers`
pointing at a live server of the app (API v2, path prefix `/`), authenticated with a
tenant API key through Prometheus's own `authorization` block. The alert arrives at
/api/v2/alerts, becomes a firing instance of an external rule, and its notification is
delivered (by calling the delivery function, no worker needed) to a local Slack receiver.
"""

from __future__ import annotations

import socket
import subprocess
import time
from urllib.parse import urlparse

import pytest
import yaml

from alerts.choices import Datasource, InstanceState, NotificationStatus
from alerts.delivery import deliver_group
from alerts.models import AlertInstance, AlertRule, Notification
from alerts.tests.celery_worker import celery_on_redis  # noqa: F401  (fixture)
from conftest import require_binary
from tenants.models import ApiKey

from .apihelpers import HttpReceiver, default_celery_app, make_channel

ALERT = "TraversionPipelineCheck"
#: Generous bound for Prometheus to start, evaluate and push; the test ends as soon as
#: the alert is there (a bound on waiting, not a timing assertion).
ARRIVAL_DEADLINE_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def publish_to_redis(celery_on_redis):  # noqa: F811
    """Deliveries scheduled by the live server's threads go to the test's Redis too."""
    with default_celery_app(celery_on_redis):
        yield celery_on_redis


@pytest.fixture
def prometheus(tmp_path):
    binary = require_binary("prometheus")
    processes = []

    def start(alertmanager: str, api_key: str) -> str:
        port = free_port()
        (tmp_path / "rules.yml").write_text(
            yaml.safe_dump(
                {
                    "groups": [
                        {
                            "name": "traversion-pipeline",
                            "interval": "1s",
                            "rules": [
                                {
                                    "alert": ALERT,
                                    "expr": "vector(1)",
                                    "for": "0s",
                                    "labels": {"severity": "critical", "service": "checkout"},
                                    "annotations": {
                                        "summary": "Pipeline check from Prometheus",
                                        "runbook_url": "https://runbooks.example.com/pipeline",
                                    },
                                }
                            ],
                        }
                    ]
                }
            )
        )
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"evaluation_interval": "1s", "scrape_interval": "1m"},
                    "rule_files": [str(tmp_path / "rules.yml")],
                    "alerting": {
                        "alertmanagers": [
                            {
                                "scheme": "http",
                                "api_version": "v2",
                                "path_prefix": "/",
                                "authorization": {"type": "Bearer", "credentials": api_key},
                                "static_configs": [{"targets": [alertmanager]}],
                            }
                        ]
                    },
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("w")
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Alerts evaluated before the alertmanager is discovered (a few seconds
                # after start) are dropped; re-send every second instead of every minute.
                "--rules.alert.resend-delay=1s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append((process, log))
        return f"http://127.0.0.1:{port}"

    yield start
    for process, log in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_for_firing_instance(prometheus_log) -> AlertInstance:
    deadline = time.monotonic() + ARRIVAL_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        instance = (
            AlertInstance.objects.filter(rule__name=ALERT, state=InstanceState.FIRING)
            .select_related("rule", "tenant")
            .first()
        )
        if instance is not None:
            return instance
        time.sleep(0.25)
    pytest.fail(f"no alert arrived from Prometheus; its log:\n{prometheus_log.read_text()[-4000:]}")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_prometheus_alert_arrives_fires_and_reaches_slack(
    live_server, prometheus, publish_to_redis, tenant_a, tmp_path
):
    _, api_key = ApiKey.issue(tenant_a, "prometheus", role="member")
    address = urlparse(live_server.url)
    with HttpReceiver() as slack:
        channel = make_channel(
            tenant_a, "slack", config={"webhook_url": slack.url + "/services/T/B/X"}
        )
        prometheus(f"{address.hostname}:{address.port}", api_key)

        instance = wait_for_firing_instance(tmp_path / "prometheus.log")

        rule = instance.rule
        assert (rule.tenant, rule.datasource, rule.severity) == (
            tenant_a,
            Datasource.EXTERNAL,
            "critical",
        )
        assert rule.runbook_url == "https://runbooks.example.com/pipeline"
        assert instance.tenant == tenant_a
        assert instance.labels["service"] == "checkout"
        assert instance.annotations["summary"] == "Pipeline check from Prometheus"
        assert "generator_url" in instance.annotations
        assert AlertRule.objects.filter(name=ALERT).count() == 1

        row = Notification.objects.get(event__instance=instance, kind="firing")
        assert row.channel == channel and row.status == NotificationStatus.QUEUED
        outcome = deliver_group(row.group_key)
        assert outcome.result == "sent", outcome

        assert len(slack.requests) == 1
        message = slack.json()
        assert message["text"].startswith(f"[FIRING] {ALERT}")
        assert "Pipeline check from Prometheus" in message["text"]
        assert "`service=checkout`" in str(message["blocks"])
        row.refresh_from_db()
        assert row.status == NotificationStatus.SENT

        # Prometheus keeps re-sending the firing alert; it stays one instance.
        assert AlertInstance.objects.filter(rule=rule).count() == 1
