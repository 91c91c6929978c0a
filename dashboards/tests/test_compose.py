"""docker-compose.yml and the Dockerfile agree with the code (Docker itself is not needed).

Every command a service runs exists (manage.py commands, importable modules, the gunicorn
config), every variable set for the application is read by it, every variable set for a
third-party image is one that image documents, and every mounted file or folder exists.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

ROOT = Path(settings.BASE_DIR)
APP_SERVICES = {"setup", "web", "worker", "beat"}
APP_IMAGE = "traversion:latest"

# Variables of third-party images, as each image's documentation names them.
IMAGE_VARIABLES = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},  # hub.docker.com/_/postgres
    "grafana/grafana": {  # grafana.com/docs: GF_<SECTION>_<KEY> overrides grafana.ini
        "GF_SECURITY_ADMIN_USER",
        "GF_SECURITY_ADMIN_PASSWORD",
        "GF_USERS_ALLOW_SIGN_UP",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
    },
    "quay.io/prometheuscommunity/postgres-exporter": {"DATA_SOURCE_NAME"},
    "oliver006/redis_exporter": {"REDIS_ADDR"},
}
# Application variables read outside settings.py, with the file that reads them.
READ_OUTSIDE_SETTINGS = {
    "PROMETHEUS_MULTIPROC_DIR": "traversion_site/gunicorn.conf.py",  # and prometheus_client
    "WEB_CONCURRENCY": "traversion_site/gunicorn.conf.py",
}
REQUIRED_SERVICES = {
    "setup",
    "web",
    "worker",
    "beat",
    "postgres",
    "redis",
    "prometheus",
    "alertmanager",
    "grafana",
    "postgres-exporter",
    "redis-exporter",
    "node-exporter",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_variables() -> set[str]:
    """Every string literal of settings.py that names an environment variable."""
    tree = ast.parse((ROOT / "traversion_site" / "settings.py").read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value)
    }


def interpolate(value: str, environment: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` / `${VAR:?error}` / `$$`, as `docker compose` reads them."""

    def replace(match: re.Match) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3)
        if environment.get(name):
            return environment[name]
        assert operator != ":?", f"{name} is required: {default}"
        return default or ""

    value = re.sub(r"(?<!\$)\$\{([A-Z0-9_]+)(:-|:\?)?([^}]*)\}", replace, value)
    return value.replace("$$", "$")


def image_name(service: dict) -> str:
    return service["image"].rsplit(":", 1)[0] if ":" in service["image"] else service["image"]


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a `sh -c` script chained with && or ;."""
    return [shlex.split(part) for part in re.split(r"&&|;", script) if part.strip()]


def argv_of(service: dict) -> list[list[str]]:
    command = service["command"]
    argv = command if isinstance(command, list) else shlex.split(command)
    if argv[:2] == ["sh", "-c"]:
        return shell_commands(argv[2])
    return [argv]


def check_app_command(argv: list[str]) -> str:
    """Assert one application command can run; returns what was checked."""
    program = argv[0]
    if program == "python" and argv[1] == "manage.py":
        assert argv[2] in get_commands(), f"no manage.py command {argv[2]!r}"
        return f"manage.py {argv[2]}"
    if program == "gunicorn":
        config = argv[argv.index("--config") + 1]
        assert (ROOT / config).is_file(), config
        worker_class = argv[argv.index("--worker-class") + 1]
        module, _, attribute = worker_class.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), worker_class
        app = argv[-1]
        module, _, attribute = app.partition(":")
        assert hasattr(importlib.import_module(module), attribute), app
        return f"gunicorn {app}"
    if program == "celery":
        assert argv[1] == "-A"
        app = importlib.import_module(argv[2]).celery.app
        assert argv[3] in {"worker", "beat"}
        assert app.main == "traversion"
        return f"celery {argv[3]}"
    if program in {"printf", "chmod"}:
        return program
    raise AssertionError(f"unexpected command {argv}")


def test_services_and_images(compose):
    services = compose["services"]
    assert set(services) >= REQUIRED_SERVICES
    for name in APP_SERVICES:
        assert services[name]["image"] == APP_IMAGE
        assert services[name]["build"] == "."
    for name, service in services.items():
        assert "image" in service, name
        if name not in APP_SERVICES:
            assert re.search(r":v?\d", service["image"]), f"{name}: pin the image version"


def test_every_application_command_exists(compose):
    services = compose["services"]
    # Migrations, the rule pack and the admin run once, before web, worker and beat start.
    assert [check_app_command(argv) for argv in argv_of(services["setup"])] == [
        "manage.py migrate",
        "manage.py load_default_rules",
        "manage.py bootstrap_demo",
        "printf",
        "chmod",
    ]
    assert [check_app_command(a) for a in argv_of(services["web"])] == [
        "gunicorn traversion_site.asgi:application"
    ]
    assert [check_app_command(a) for a in argv_of(services["worker"])] == ["celery worker"]
    assert [check_app_command(a) for a in argv_of(services["beat"])] == ["celery beat"]
    for name in ("web", "worker", "beat"):
        condition = services[name]["depends_on"]["setup"]["condition"]
        assert condition == "service_completed_successfully"


def test_dockerfile_default_command_is_the_web_command(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile
    assert "collectstatic --noinput" in dockerfile
    assert re.search(r"^USER traversion$", dockerfile, re.M), "the app must not run as root"
    cmd = re.search(r"^CMD (\[.*?\])$", dockerfile, re.M | re.S).group(1)
    assert yaml.safe_load(cmd.replace("\\\n", "")) == compose["services"]["web"]["command"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "var", ".git"} <= set(ignored)


def test_application_variables_are_read_by_the_application(compose):
    known = settings_variables()
    for name in sorted(APP_SERVICES):
        for variable in compose["services"][name].get("environment", {}):
            if variable in known:
                continue
            reader = READ_OUTSIDE_SETTINGS.get(variable)
            assert reader, f"{name}: {variable} is read by nothing (not in settings.py)"
            assert f'"{variable}"' in (ROOT / reader).read_text(), (variable, reader)


def test_web_host_always_allowed(compose):
    """Prometheus and beat's healthcheck reach the app as http://web:8000, whatever .env says."""
    allowed = compose["x-app"]["environment"]["ALLOWED_HOSTS"]
    assert allowed.endswith(",web")
    assert "web" in interpolate(allowed, {"ALLOWED_HOSTS": "example.com"}).split(",")


def test_third_party_variables_are_documented_by_their_image(compose):
    for name, service in compose["services"].items():
        if name in APP_SERVICES:
            continue
        variables = set(service.get("environment", {}))
        assert variables <= IMAGE_VARIABLES.get(image_name(service), set()), (name, variables)


def test_interpolated_variables_are_documented(compose):
    """${VAR} used by compose is a documented setting or in docs/deploy.md's compose table."""
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = (ROOT / ".env.example").read_text()
    table = (ROOT / "docs" / "deploy.md").read_text().split("### Compose variables", 1)[1]
    table = table.split("\n## ", 1)[0]
    missing = {
        v
        for v in used
        if not re.search(rf"^#?\s*{v}=", example, re.M) and f"| `{v}` |" not in table
    }
    assert not missing, f"documented nowhere: {sorted(missing)}"
    for required in ("SECRET_KEY", "ALERT_RECEIVER_TOKEN"):
        assert f"${{{required}:?" in text
        assert re.search(rf"^{required}=", example, re.M)


def test_every_mounted_file_exists(compose):
    volumes = set(compose["volumes"])
    mounts = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(("./", "/")):
                path = (ROOT / source) if source.startswith("./") else Path(source)
                assert path.exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} mounts undeclared volume {source}"
            mounts += 1
    assert mounts >= 15


def test_named_volumes_keep_their_names(compose):
    for key, volume in compose["volumes"].items():
        assert volume["name"] == key, "set name: so compose does not prefix the project"
    assert {"traversion_grafana_data", "traversion_prometheus_data"} <= set(compose["volumes"])
    mounts = {
        v.split(":")[0]: (name, v.split(":")[1])
        for name, s in compose["services"].items()
        for v in s.get("volumes", [])
    }
    assert mounts["traversion_grafana_data"] == ("grafana", "/var/lib/grafana")
    assert mounts["traversion_prometheus_data"] == ("prometheus", "/prometheus")


def test_ports_as_in_the_guide(compose):
    services = compose["services"]
    assert set(services["web"]["ports"]) == {"8000:8000", "3338:8000"}
    assert services["prometheus"]["ports"] == ["9090:9090"]
    assert services["grafana"]["ports"] == ["3000:3000"]
    assert services["alertmanager"]["ports"] == ["9093:9093"]
    bind = services["web"]["command"][services["web"]["command"].index("--bind") + 1]
    assert bind == "0.0.0.0:8000"


def test_healthchecks(compose):
    for name, service in compose["services"].items():
        if name == "setup":
            assert service["restart"] == "no"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "/healthz" in " ".join(compose["services"]["web"]["healthcheck"]["test"])
    # Dependencies wait for health, not just for a container to exist.
    for name in ("setup", "postgres-exporter"):
        assert compose["services"][name]["depends_on"]["postgres"]["condition"] == (
            "service_healthy"
        )
