"""A bad value fails at start-up, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def check_with(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "SECRET_KEY": "x", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENABLE_METRICS", "maybe"),
        ("DEBUG", "sometimes"),
        ("METRICS_COLLECTION_INTERVAL", "fast"),
        ("METRICS_COLLECTION_INTERVAL", "-1"),
        ("ALERT_CHECK_INTERVAL", "1m"),
        ("ALERT_CHECK_INTERVAL", "10"),
        ("ALERT_COOLDOWN", "soon"),
        ("ALERT_TICK_SECONDS", "0"),
        ("ALERT_GROUP_WAIT", "x"),
        ("ALERT_SQL_TIMEOUT_MS", "5s"),
        ("ALERT_HISTORY_RETENTION_DAYS", "0"),
        ("EVENT_RETENTION_DAYS", "forever"),
        ("SMTP_PORT", "smtp"),
        ("SMTP_SECURITY", "maybe"),
        ("PROMETHEUS_URL", "localhost:9090"),
        ("GRAFANA_URL", "ftp://grafana"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("CELERY_BROKER_URL", "nonsense"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("SLACK_WEBHOOK", "hooks.slack.com/x"),
    ],
)
def test_bad_value_fails_naming_the_variable(name, value):
    result = check_with(**{name: value})
    assert result.returncode != 0
    assert f"{name}=" in result.stderr, result.stderr


def test_missing_secret_key_without_debug_fails():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["DEBUG"] = "false"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_good_values_pass():
    result = check_with(ALERT_CHECK_INTERVAL="30000", ENABLE_METRICS="false", SMTP_PORT="587")
    assert result.returncode == 0, result.stderr


def test_env_example_documents_every_variable():
    import re

    source = (BASE_DIR / "traversion_site" / "settings.py").read_text()
    read = set(
        re.findall(r'(?:env\.\w+|Env\(\)\.\w+|_setting|_bool|_url)\(\s*"([A-Z][A-Z0-9_]+)"', source)
    )
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.M)
    )
    assert read, "no variables found in settings.py"
    assert read - documented == set(), "undocumented in .env.example"
    assert documented - read == set(), "documented but never read"
