"""Every dashboard panel and every Prometheus rule returns data from a real Prometheus.

The stack runs as docker-compose runs it, minus Docker: the compose file's own web
(gunicorn + uvicorn workers, prometheus_client multiprocess mode), worker (its metrics
port) and beat commands, on the test database and Redis; a real Prometheus (Debian
package) started from deploy/prometheus/prometheus.yml with its hosts pointed at them
(scrape and evaluation every second) and the exported rules file. `generate_traffic`
drives traffic, then every expression of every panel of the three dashboards (with
`$tenant` = `.*`, `$__rate_interval` = 1m, `$__range` = 5m) goes through Prometheus's HTTP
API and must return at least one series; so must the tenant variable's label query, the
tenant dashboard rendered for the traffic tenant, and every rule expression of alerts.yml.

A rule expression is often rightly empty while nothing is wrong (`rate(x[5m]) > 10`, or
`absent(up{...})`): for those the data it compares is checked instead, i.e. the
expression without its outermost comparison (dashboards.promql.data_expressions), so
that a rule reading a metric nothing emits cannot pass.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from django.conf import settings
from django.db import connection

from conftest import require_binary, require_postgresql
from dashboards import library, promql
from dashboards.tests.known_metrics import EXPORTER_METRICS
from metrics.labels import tenant_label

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(settings.BASE_DIR)
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS_YML = ROOT / "deploy" / "prometheus" / "alerts.yml"
VARIABLES = {"tenant": ".*", "__rate_interval": "1m", "__interval": "1m", "__range": "5m"}
TRAFFIC_TENANT = "traffic-a"
START_TIMEOUT_SECONDS = 90
TRAFFIC_TIMEOUT_SECONDS = 200

# Exporter job -> (Debian binary, how to start it on a port).
EXPORTERS = {
    "node": "prometheus-node-exporter",
    "postgres": "prometheus-postgres-exporter",
    "redis": "prometheus-redis-exporter",
}
EXPORTER_OF_JOB = {
    "node": "node-exporter",
    "postgres": "postgres-exporter",
    "redis": "redis-exporter",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with defaults only (the test sets what it needs)."""
    value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


def compose_command(service: str) -> list[str]:
    argv = [interpolate(str(a)) for a in COMPOSE["services"][service]["command"]]
    return [str(BIN / argv[0]), *argv[1:]]


class Stack:
    """The processes this test starts; each in its own process group, stopped at the end."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # closed in stop()
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        process.log = log
        self.processes[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in self.processes.values():
            try:  # pool children may outlive their leader
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            process.log.close()


def wait_until(what: str, predicate, stack: Stack, timeout: float = START_TIMEOUT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def rule_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS_YML.read_text())
    return [
        (rule.get("alert") or rule.get("record"), str(rule["expr"]))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def referenced_exporters(expressions: list[str]) -> set[str]:
    names = set().union(*(promql.metric_names(e) for e in expressions))
    return {job for job, exporter in EXPORTER_OF_JOB.items() if names & EXPORTER_METRICS[exporter]}


def prometheus_config(ports: dict[str, int], token_file: Path, exporters: dict[str, int]) -> dict:
    """deploy/prometheus/prometheus.yml with the compose hosts replaced by this test's."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(ALERTS_YML)]
    (alertmanager,) = config["alerting"]["alertmanagers"]
    alertmanager["static_configs"] = [{"targets": [f"127.0.0.1:{ports['web']}"]}]
    alertmanager["authorization"]["credentials_file"] = str(token_file)
    targets = {
        "traversion-web": ports["web"],
        "traversion-worker": ports["worker"],
        "prometheus": ports["prometheus"],
        **exporters,
    }
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in targets:
            continue  # an exporter no expression needs: not started here
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
        job["scrape_interval"] = "1s"
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def start_exporter(stack: Stack, job: str, port: int, env: dict[str, str], redis_url: str):
    binary = require_binary(EXPORTERS[job])
    listen = f"127.0.0.1:{port}"
    if job == "node":
        argv = [binary, f"--web.listen-address={listen}"]
    elif job == "postgres":
        env = {
            **env,
            "DATA_SOURCE_NAME": env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
            + "?sslmode=disable",
        }
        argv = [binary, f"--web.listen-address={listen}"]
    else:
        argv = [binary, f"-web.listen-address={listen}", f"-redis.addr={redis_url}"]
    stack.start(f"exporter-{job}", argv, env)


class PrometheusAPI:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> tuple[str, int, str]:
        """(status, number of series, error) of an instant query now."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            return "error", 0, body.get("error", response.text[:200])
        data = body["data"]
        count = 1 if data["resultType"] in ("scalar", "string") else len(data["result"])
        return "success", count, ""


def test_every_panel_and_rule_expression_returns_series(tmp_path, redis_url, capsys):
    from tenants.models import Tenant

    prometheus_bin = require_binary("prometheus")
    require_postgresql("the end-to-end stack needs PostgreSQL (DATABASE_URL=postgres://...)")
    assert ALERTS_YML.is_file(), "deploy/prometheus/alerts.yml is missing"
    dashboards = library.load_all()
    panel_queries = [
        (uid, panel["title"], expr)
        for uid, dashboard in dashboards.items()
        for panel in library.panels(dashboard)
        for expr in library.exprs(panel)
    ]
    rules = rule_expressions()
    needed_exporters = referenced_exporters(
        [expr for _, _, expr in panel_queries] + [expr for _, expr in rules]
    )

    ports = {name: free_port() for name in ("web", "worker", "prometheus")}
    exporter_ports = {job: free_port() for job in needed_exporters}
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "traversion_site.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PROMETHEUS_URL": f"http://127.0.0.1:{ports['prometheus']}",
        "ALERT_RECEIVER_TOKEN": token,
        "ENABLE_METRICS": "true",
        "METRICS_COLLECTION_INTERVAL": "1000",
        "ALERT_TICK_SECONDS": "1",
        "ALERT_GROUP_WAIT": "200",
        "TRAVERSION_VAR_DIR": str(tmp_path / "var"),
        "WEB_CONCURRENCY": "2",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    (tmp_path / "var").mkdir()  # the image's /app/var: beat keeps its schedule there
    stack = Stack(tmp_path)
    try:
        setup = subprocess.run(
            [sys.executable, "manage.py", "load_default_rules"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr

        # As in docker-compose.yml: each service its own multiprocess directory.
        for service in ("web", "worker", "beat"):
            service_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{service}")}
            Path(service_env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
            argv = compose_command(service)
            if service == "web":
                argv[argv.index("--bind") + 1] = f"127.0.0.1:{ports['web']}"
            if service == "worker":
                service_env["WORKER_METRICS_PORT"] = str(ports["worker"])
                service_env["WORKER_METRICS_ADDRESS"] = "127.0.0.1"
            stack.start(service, argv, service_env)
        base = f"http://127.0.0.1:{ports['web']}"
        wait_until(
            "gunicorn /healthz",
            lambda: requests.get(f"{base}/healthz", timeout=2).status_code == 200,
            stack,
        )
        for job, port in exporter_ports.items():
            start_exporter(stack, job, port, env, redis_url)

        token_file = tmp_path / "alert-receiver-token"
        token_file.write_text(token)
        config = prometheus_config(ports, token_file, exporter_ports)
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        stack.start(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--storage.tsdb.retention.time=1h",
            ],
            env,
        )
        prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
        api = PrometheusAPI(prometheus_url)

        def all_targets_up() -> bool:
            targets = requests.get(f"{prometheus_url}/api/v1/targets", timeout=2).json()
            active = targets["data"]["activeTargets"]
            return len(active) == len(config["scrape_configs"]) and all(
                t["health"] == "up" for t in active
            )

        wait_until("every scrape target up", all_targets_up, stack)
        alertmanagers = requests.get(f"{prometheus_url}/api/v1/alertmanagers", timeout=5).json()
        assert [a["url"] for a in alertmanagers["data"]["activeAlertmanagers"]] == [
            f"http://127.0.0.1:{ports['web']}/api/v2/alerts"
        ]

        traffic = subprocess.run(
            [sys.executable, "manage.py", "generate_traffic", "--base-url", base, "--strict"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TRAFFIC_TIMEOUT_SECONDS,
        )
        print(traffic.stdout)
        assert traffic.returncode == 0, traffic.stdout[-3000:] + traffic.stderr[-3000:]

        # A few scrapes and rule evaluations after the traffic (1 s each).
        label = tenant_label(Tenant.objects.get(slug=TRAFFIC_TENANT))
        wait_until(
            "the traffic tenant in Prometheus",
            lambda: api.query(f'traversion_http_requests_total{{tenant_id="{label}"}}')[1] > 0,
            stack,
        )
        time.sleep(5)
        stack.check_alive()

        results: list[tuple[str, str, str, int, str]] = []
        for uid, title, expr in panel_queries:
            query = promql.substitute(expr, VARIABLES)
            results.append((f"{uid} / {title}", expr, *api.query(query)))
        tenant = Tenant.objects.get(slug=TRAFFIC_TENANT)
        tenant_dashboard = library.render_for_tenant(
            dashboards[library.OVERVIEW_UID],
            label=tenant_label(tenant),
            slug=tenant.slug,
            name=tenant.name,
        )
        for panel in library.panels(tenant_dashboard):
            for expr in library.exprs(panel):
                query = promql.substitute(expr, VARIABLES)
                results.append(
                    (f"{tenant_dashboard['uid']} / {panel['title']}", expr, *api.query(query))
                )
        for name, expr in rules:
            for data in promql.data_expressions(expr):
                results.append((f"rule {name}", data, *api.query(data)))
        # `x or vector(0)` has data even when x does not exist: every metric named by a
        # panel or a rule must have series of its own.
        names = sorted(
            set().union(*(promql.metric_names(e) for e in [q for _, _, q in panel_queries]))
            | set().union(*(promql.metric_names(e) for _, e in rules))
        )
        for name in names:
            query = f'count({{__name__="{name}"}})'
            results.append((f"metric {name}", query, *api.query(query)))

        values = requests.get(
            f"{prometheus_url}/api/v1/label/tenant_id/values",
            params={"match[]": "traversion_http_requests_total"},
            timeout=10,
        ).json()["data"]
    except BaseException:
        with capsys.disabled():  # what each process said, to see why
            for name in stack.processes:
                print(f"\n--- {name} (last lines) ---\n{stack.tail(name, 25)}")
        raise
    finally:
        stack.stop()

    panels = sum(1 for d in dashboards.values() for _ in library.panels(d))
    empty = [r for r in results if r[2] != "success" or r[3] == 0]
    with capsys.disabled():
        print(
            f"\ndashboards: {panels} panels checked, {len(panel_queries)} panel queries; "
            f"tenant dashboard: {sum(1 for r in results if r[0].startswith('traversion-tenant'))} "
            f"queries; rules: {len(rules)} rules, "
            f"{sum(1 for r in results if r[0].startswith('rule '))} rule queries; "
            f"{sum(1 for r in results if r[0].startswith('metric '))} metric names; "
            f"{len(results) - len(empty)}/{len(results)} queries non-empty"
        )
    assert label in values, f"tenant variable values: {values}"
    assert not empty, "queries without data:\n" + "\n".join(
        f"  {where}: {expr} -> {status} {error}" for where, expr, status, _, error in empty
    )
