"""The transport contract: registry, model choices, config validation, secrets, defaults."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from alerts.channels import TRANSPORTS, channel_type_choices, get_transport
from alerts.channels.base import MASK, Transport
from alerts.choices import (
    ACKNOWLEDGE_CHANNEL_TYPES,
    SEND_RESOLVED_DEFAULT,
    ChannelType,
    NotificationKind,
)
from alerts.dispatch import channel_wants
from alerts.models import NotificationChannel


def test_registry_gives_the_model_its_choices():
    assert set(TRANSPORTS) == set(ChannelType.values)
    field = NotificationChannel._meta.get_field("type")
    assert list(field.choices) == channel_type_choices()
    assert dict(field.choices) == {t: cls.label for t, cls in TRANSPORTS.items()}
    for channel_type, cls in TRANSPORTS.items():
        transport = get_transport(channel_type)
        assert isinstance(transport, Transport) and transport.type == channel_type
        assert cls.guarantee in ("exactly-once", "at-least-once")
    with pytest.raises(KeyError, match="carrier-pigeon"):
        get_transport("carrier-pigeon")


def test_transport_defaults_agree_with_the_documented_constants():
    for channel_type, cls in TRANSPORTS.items():
        assert cls.send_resolved_default == SEND_RESOLVED_DEFAULT[channel_type]
        assert cls.supports_acknowledge == (channel_type in ACKNOWLEDGE_CHANNEL_TYPES)


@pytest.mark.parametrize(
    ("channel_type", "send_resolved", "kind", "wanted"),
    [
        ("pagerduty", None, NotificationKind.RESOLVED, True),
        ("webhook", None, NotificationKind.RESOLVED, True),
        ("slack", None, NotificationKind.RESOLVED, False),
        ("email", None, NotificationKind.RESOLVED, False),
        ("slack", True, NotificationKind.RESOLVED, True),
        ("pagerduty", False, NotificationKind.RESOLVED, False),
        ("pagerduty", None, NotificationKind.ACKNOWLEDGE, True),
        ("slack", None, NotificationKind.ACKNOWLEDGE, False),
        ("webhook", True, NotificationKind.ACKNOWLEDGE, False),
        ("email", None, NotificationKind.FIRING, True),
    ],
)
def test_channel_wants_asks_the_transport(channel_type, send_resolved, kind, wanted):
    channel = NotificationChannel(type=channel_type, send_resolved=send_resolved)
    assert channel_wants(channel, kind) is wanted


@pytest.mark.parametrize(
    ("channel_type", "config", "cleaned"),
    [
        ("slack", {"webhook_url": "https://hooks.slack.com/services/T/B/x"}, None),
        (
            "pagerduty",
            {"routing_key": " R0123456789abcdef0123456789abcd "},
            {
                "routing_key": "R0123456789abcdef0123456789abcd",
                "api_url": "https://events.pagerduty.com/v2/enqueue",
            },
        ),
        (
            "pagerduty",
            {"routing_key": "abc", "api_url": "http://127.0.0.1:9/v2/enqueue"},
            {"routing_key": "abc", "api_url": "http://127.0.0.1:9/v2/enqueue"},
        ),
        (
            "email",
            {"to": "a@example.test, b@example.test"},
            {"to": ["a@example.test", "b@example.test"]},
        ),
        (
            "webhook",
            {"url": "https://hooks.example.test/x"},
            {"url": "https://hooks.example.test/x", "secret": ""},
        ),
        (
            "webhook",
            {"url": "http://127.0.0.1:8080/x", "secret": "s", "timeout": 2, "max_alerts": 10},
            {"url": "http://127.0.0.1:8080/x", "secret": "s", "timeout": 2.0, "max_alerts": 10},
        ),
    ],
)
def test_valid_configs_are_cleaned(channel_type, config, cleaned):
    assert get_transport(channel_type).validate_config(config) == (cleaned or config)


@pytest.mark.parametrize(
    ("channel_type", "config", "key"),
    [
        ("slack", {}, "webhook_url"),
        ("slack", {"webhook_url": "not a url"}, "webhook_url"),
        ("slack", {"webhook_url": "ftp://hooks.example.test/x"}, "webhook_url"),
        ("slack", {"webhook_url": "https://h.example.test", "webhook": "typo"}, "webhook"),
        ("pagerduty", {}, "routing_key"),
        ("pagerduty", {"routing_key": "has spaces inside"}, "routing_key"),
        ("pagerduty", {"routing_key": "abc", "api_url": "nope"}, "api_url"),
        ("email", {"to": ["not-an-address"]}, "to"),
        ("email", {"to": [1, 2]}, "to"),
        ("email", {}, "to"),  # and no ALERT_TO_EMAIL either
        ("webhook", {}, "url"),
        ("webhook", {"url": "https://h.example.test", "timeout": 0}, "timeout"),
        ("webhook", {"url": "https://h.example.test", "timeout": 600}, "timeout"),
        ("webhook", {"url": "https://h.example.test", "timeout": "fast"}, "timeout"),
        ("webhook", {"url": "https://h.example.test", "secret": 42}, "secret"),
        ("webhook", {"url": "https://h.example.test", "max_alerts": -1}, "max_alerts"),
        ("webhook", {"url": "https://h.example.test", "secret": "a\x00b"}, "secret"),
        ("email", {"to": ["a@example.test\x00"]}, "to"),
    ],
)
def test_invalid_configs_name_the_field(channel_type, config, key, settings):
    settings.ALERT_TO_EMAIL = []
    with pytest.raises(ValidationError) as caught:
        get_transport(channel_type).validate_config(config)
    assert key in caught.value.message_dict


def test_config_must_be_an_object():
    with pytest.raises(ValidationError) as caught:
        get_transport("slack").validate_config(["https://hooks.example.test"])
    assert "config" in caught.value.message_dict


def test_email_to_may_be_empty_when_alert_to_email_is_set(settings):
    settings.ALERT_TO_EMAIL = ["ops@example.test"]
    assert get_transport("email").validate_config({}) == {"to": []}


def test_secrets_are_declared_and_redacted():
    assert get_transport("slack").secret_fields == ("webhook_url",)
    assert get_transport("pagerduty").secret_fields == ("routing_key",)
    assert get_transport("webhook").secret_fields == ("secret",)
    assert get_transport("email").secret_fields == ()  # the SMTP password is never stored
    redacted = get_transport("pagerduty").redact(
        {"routing_key": "R0123456789abcdef0123456789abcd", "api_url": "https://x.example.test"}
    )
    assert redacted == {"routing_key": MASK, "api_url": "https://x.example.test"}


@pytest.mark.django_db
def test_a_stored_invalid_config_is_a_permanent_error_without_values(tenant_a):
    from alerts.channels.base import PermanentDeliveryError

    channel = NotificationChannel.objects.create(
        tenant=tenant_a, name="bad", type="slack", config={"webhook_url": "nope-secret-value"}
    )
    with pytest.raises(PermanentDeliveryError) as caught:
        get_transport("slack").config_of(channel)
    assert "webhook_url" in str(caught.value)
    assert "nope-secret-value" not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [("30", 30, 30), ("0", 0, 0), ("7200", 3600, 3600), ("soon", None, None), ("", None, None)],
)
def test_retry_after_seconds_are_read_and_clamped(header, low, high):
    import requests

    from alerts.channels.base import parse_retry_after

    response = requests.Response()
    response.headers["Retry-After"] = header
    value = parse_retry_after(response)
    if low is None:
        assert value is None
    else:
        assert low <= value <= high


def test_retry_after_may_be_an_http_date():
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    import requests

    from alerts.channels.base import parse_retry_after

    response = requests.Response()
    response.headers["Retry-After"] = format_datetime(
        datetime.now(UTC) + timedelta(seconds=90), usegmt=True
    )
    assert 80 <= parse_retry_after(response) <= 90
