"""Global default channels from .env: created, updated, disabled when the variable goes."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from alerts.channels.defaults import ensure_default_channels
from alerts.models import NotificationChannel

pytestmark = pytest.mark.django_db

SLACK = "https://hooks.slack.com/services/T0/B0/abc"
PD_KEY = "R0123456789abcdef0123456789abcd"


@pytest.fixture
def env(settings):
    settings.SLACK_WEBHOOK = SLACK
    settings.PAGERDUTY_KEY = PD_KEY
    settings.PAGERDUTY_API_URL = "https://events.pagerduty.com/v2/enqueue"
    settings.ALERT_TO_EMAIL = ["ops-team@example.test"]
    return settings


def globals_by_name() -> dict[str, NotificationChannel]:
    return {c.name: c for c in NotificationChannel.objects.filter(tenant__isnull=True)}


def test_variables_create_the_global_default_channels(env):
    assert ensure_default_channels() == {
        "default-slack": "created",
        "default-pagerduty": "created",
        "default-email": "created",
    }
    channels = globals_by_name()
    assert channels["default-slack"].type == "slack"
    assert channels["default-slack"].config == {"webhook_url": SLACK}
    assert channels["default-pagerduty"].config == {
        "routing_key": PD_KEY,
        "api_url": "https://events.pagerduty.com/v2/enqueue",
    }
    assert channels["default-email"].config == {"to": ["ops-team@example.test"]}
    assert all(c.enabled and c.tenant_id is None for c in channels.values())
    # Running again changes nothing.
    assert set(ensure_default_channels().values()) == {"unchanged"}
    assert NotificationChannel.objects.count() == 3


def test_a_changed_variable_updates_and_a_removed_one_disables(env):
    ensure_default_channels()
    NotificationChannel.objects.filter(name="default-pagerduty").update(
        broken_at="2026-01-01T00:00Z"
    )
    env.PAGERDUTY_KEY = "Rnewkey0123456789abcdef01234567"
    env.SLACK_WEBHOOK = ""
    env.ALERT_TO_EMAIL = []

    outcome = ensure_default_channels()

    assert outcome == {
        "default-slack": "disabled",
        "default-pagerduty": "updated",
        "default-email": "disabled",
    }
    channels = globals_by_name()
    assert channels["default-pagerduty"].config["routing_key"] == "Rnewkey0123456789abcdef01234567"
    assert channels["default-pagerduty"].broken_at is None  # a new key starts afresh
    assert not channels["default-slack"].enabled
    assert channels["default-slack"].config == {"webhook_url": SLACK}  # kept, with its history
    assert not channels["default-email"].enabled

    env.SLACK_WEBHOOK = SLACK
    assert ensure_default_channels()["default-slack"] == "updated"
    assert globals_by_name()["default-slack"].enabled


def test_nothing_set_creates_nothing(settings):
    settings.SLACK_WEBHOOK = ""
    settings.PAGERDUTY_KEY = ""
    settings.ALERT_TO_EMAIL = []
    assert set(ensure_default_channels().values()) == {"absent"}
    assert not NotificationChannel.objects.exists()


def test_an_invalid_value_is_refused_by_name_not_by_value(env):
    env.PAGERDUTY_KEY = "not a key with spaces"
    with pytest.raises(ValidationError) as caught:
        ensure_default_channels()
    assert "routing_key" in caught.value.message_dict
    assert "not a key" not in str(caught.value)
    assert not NotificationChannel.objects.exists()  # all or nothing
