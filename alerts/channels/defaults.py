"""The global default channels from the environment (the monitoring guide's `.env`).

`SLACK_WEBHOOK` -> "default-slack", `PAGERDUTY_KEY` (+ `PAGERDUTY_API_URL`) ->
"default-pagerduty", `ALERT_TO_EMAIL` (sent through the SMTP_* server) -> "default-email".
A variable that is set creates or updates (and enables) its channel; a variable that is
removed disables it (kept, with its history). Called by `manage.py load_default_rules`.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from ..choices import ChannelType

logger = logging.getLogger(__name__)

DEFAULT_SLACK = "default-slack"
DEFAULT_PAGERDUTY = "default-pagerduty"
DEFAULT_EMAIL = "default-email"


def _wanted() -> list[tuple[str, str, dict | None]]:
    """(name, type, config or None when the variable is unset)."""
    return [
        (
            DEFAULT_SLACK,
            ChannelType.SLACK,
            {"webhook_url": settings.SLACK_WEBHOOK} if settings.SLACK_WEBHOOK else None,
        ),
        (
            DEFAULT_PAGERDUTY,
            ChannelType.PAGERDUTY,
            {"routing_key": settings.PAGERDUTY_KEY, "api_url": settings.PAGERDUTY_API_URL}
            if settings.PAGERDUTY_KEY
            else None,
        ),
        (
            DEFAULT_EMAIL,
            ChannelType.EMAIL,
            {"to": list(settings.ALERT_TO_EMAIL)} if settings.ALERT_TO_EMAIL else None,
        ),
    ]


@transaction.atomic
def ensure_default_channels() -> dict[str, str]:
    """Create, update or disable the global default channels; returns {name: what happened}.

    What happened is one of created, updated, unchanged, disabled, absent.
    """
    from ..models import NotificationChannel
    from . import get_transport

    outcome: dict[str, str] = {}
    for name, channel_type, config in _wanted():
        channel = (
            NotificationChannel.objects.select_for_update()
            .filter(tenant__isnull=True, name=name)
            .first()
        )
        if config is None:
            if channel is not None and channel.enabled:
                channel.enabled = False
                channel.save(update_fields=["enabled", "updated_at"])
                outcome[name] = "disabled"
            else:
                outcome[name] = "absent" if channel is None else "unchanged"
            continue
        # A bad value in .env is reported by name, never by value (it is a credential).
        config = get_transport(channel_type).validate_config(config)
        if channel is None:
            NotificationChannel.objects.create(
                tenant=None, name=name, type=channel_type, config=config, enabled=True
            )
            outcome[name] = "created"
        elif channel.config != config or channel.type != channel_type or not channel.enabled:
            changed_config = channel.config != config
            channel.type, channel.config, channel.enabled = channel_type, config, True
            if changed_config:
                channel.broken_at = None  # a new key or URL deserves a fresh start
            channel.save()
            outcome[name] = "updated"
        else:
            outcome[name] = "unchanged"
        logger.info("default channel %s: %s", name, outcome[name])
    return outcome
