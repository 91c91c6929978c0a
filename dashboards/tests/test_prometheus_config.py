"""deploy/: Prometheus, Alertmanager and Grafana provisioning are valid and agree with compose."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from conftest import require_binary
from dashboards import library

ROOT = Path(settings.BASE_DIR)
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def prometheus() -> dict:
    return load(PROMETHEUS_YML)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(ROOT / "docker-compose.yml")


def container_paths(service: dict) -> dict[str, str]:
    """container path -> host path (or volume name) of a compose service's mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def test_promtool_check_config():
    promtool = require_binary("promtool")
    # Host names are compose service names: promtool does not resolve them, but it does
    # check that rule files exist and parse (alerts.yml, exported from the rule pack).
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid prometheus config file syntax" in result.stdout + result.stderr
    assert "rule files found" in result.stdout + result.stderr


def test_amtool_check_alertmanager_config():
    amtool = require_binary("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_jobs_target_the_compose_services(prometheus, compose):
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert set(jobs) == {
        "traversion-web",
        "traversion-worker",
        "postgres",
        "redis",
        "node",
        "prometheus",
    }
    assert jobs["traversion-web"]["static_configs"][0]["targets"] == ["web:8000"]
    assert jobs["traversion-web"]["metrics_path"] == "/metrics"
    worker_sd = jobs["traversion-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"]
    worker_port = int(compose["services"]["worker"]["environment"]["WORKER_METRICS_PORT"])
    assert worker_sd["port"] == worker_port
    for job, service, port in (
        ("postgres", "postgres-exporter", 9187),
        ("redis", "redis-exporter", 9121),
        ("node", "node-exporter", 9100),
    ):
        assert jobs[job]["static_configs"][0]["targets"] == [f"{service}:{port}"]
        assert service in compose["services"]
        # The exporter's healthcheck probes the port Prometheus scrapes.
        assert f":{port}/metrics" in " ".join(compose["services"][service]["healthcheck"]["test"])
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["localhost:9090"]


def test_rule_files_are_the_exported_rule_pack(prometheus):
    assert prometheus["rule_files"] == ["alerts.yml"]
    rules = load(PROMETHEUS_YML.parent / "alerts.yml")
    assert rules["groups"], "alerts.yml has no rule groups (manage.py export_prometheus_rules)"


def test_alerts_pushed_to_traversion_receiver(prometheus, compose):
    (alertmanager,) = prometheus["alerting"]["alertmanagers"]
    assert alertmanager["api_version"] == "v2"
    assert alertmanager["path_prefix"] == "/"  # -> POST http://web:8000/api/v2/alerts
    assert alertmanager["static_configs"][0]["targets"] == ["web:8000"]
    credentials = Path(alertmanager["authorization"]["credentials_file"])
    assert alertmanager["authorization"]["type"] == "Bearer"
    # The credential file lives in the secrets volume that setup writes and Prometheus mounts.
    mounts = container_paths(compose["services"]["prometheus"])
    assert mounts[str(credentials.parent)] == "traversion_secrets"
    setup = compose["services"]["setup"]
    setup_mount = next(t for t, s in container_paths(setup).items() if s == "traversion_secrets")
    script = " ".join(setup["command"])
    assert f"> {setup_mount}/{credentials.name}" in script
    assert "$$ALERT_RECEIVER_TOKEN" in script
    # The receiver path exists in the application.
    from django.urls import resolve

    assert resolve("/api/v2/alerts").url_name
    assert resolve("/webhook/alerts").url_name


def test_alertmanager_forwards_to_traversion_webhook(compose):
    config = load(ALERTMANAGER_YML)
    receivers = {r["name"]: r for r in config["receivers"]}
    webhook = receivers[config["route"]["receiver"]]["webhook_configs"][0]
    assert webhook["url"] == "http://web:8000/webhook/alerts"
    assert webhook["send_resolved"] is True
    credentials = Path(webhook["http_config"]["authorization"]["credentials_file"])
    mounts = container_paths(compose["services"]["alertmanager"])
    assert mounts[str(credentials.parent)] == "traversion_secrets"


def test_grafana_provisioning_matches_compose(compose):
    grafana = compose["services"]["grafana"]
    mounts = container_paths(grafana)
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"

    (datasource,) = load(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]

    (provider,) = load(provisioning / "dashboards" / "traversion.yml")["providers"]
    assert provider["type"] == "file"
    folder = provider["options"]["path"]
    # The provider reads the folder compose mounts from dashboards/grafana/.
    assert (ROOT / mounts[folder]).resolve() == library.GRAFANA_DIR
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/traversion-overview.json"
    # The guide: Grafana on 3000 with admin/admin.
    assert "3000:3000" in grafana["ports"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_USER"] == "admin"
    assert (
        grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-admin}"
    )
