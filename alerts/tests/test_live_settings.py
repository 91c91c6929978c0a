"""The live board's configuration: channel layer from REDIS_URL, a checked poll interval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
SHOW = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps([settings.CHANNEL_LAYERS['default'], settings.LIVE_BOARD_POLL_INTERVAL]))"
)


def settings_with(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "traversion_site.settings",
            "SECRET_KEY": "x",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_redis_url_selects_the_redis_channel_layer():
    result = settings_with(REDIS_URL="redis://127.0.0.1:6379/5")
    assert result.returncode == 0, result.stderr
    layer, interval = json.loads(result.stdout)
    assert layer == {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": "redis://127.0.0.1:6379/5", "socket_timeout": 15}],
            "prefix": "traversion:live",
        },
    }
    assert interval == 1000


def test_embedded_default_uses_the_in_memory_layer_and_polls():
    result = settings_with(REDIS_URL="", LIVE_BOARD_POLL_INTERVAL="250")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        250,
    ]


@pytest.mark.parametrize("value", ["fast", "50", "-1"])
def test_bad_poll_interval_fails_naming_the_variable(value):
    result = settings_with(LIVE_BOARD_POLL_INTERVAL=value)
    assert result.returncode != 0
    assert "LIVE_BOARD_POLL_INTERVAL=" in result.stderr, result.stderr
