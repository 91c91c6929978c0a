"""Notification channel types: one small transport per type, looked up in one registry.

`TRANSPORTS` maps a channel type to its transport class; the model's `type` choices come
from it (`channel_type_choices`), so adding a type is adding a module and a line here.
"""

from __future__ import annotations

from .base import (
    AlertMessage,
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Transport,
)
from .email import EmailTransport
from .pagerduty import PagerDutyTransport
from .slack import SlackTransport
from .webhook import WebhookTransport

TRANSPORTS: dict[str, type[Transport]] = {
    transport.type: transport
    for transport in (EmailTransport, SlackTransport, PagerDutyTransport, WebhookTransport)
}


def get_transport(channel_type: str) -> Transport:
    """The transport of a channel type; KeyError names the unknown type."""
    try:
        return TRANSPORTS[channel_type]()
    except KeyError:
        raise KeyError(f"unknown channel type {channel_type!r}") from None


def channel_type_choices() -> list[tuple[str, str]]:
    """Choices of NotificationChannel.type (Django accepts this callable)."""
    return [(key, transport.label) for key, transport in TRANSPORTS.items()]


__all__ = [
    "TRANSPORTS",
    "AlertMessage",
    "DeliveryError",
    "PermanentDeliveryError",
    "RetryableDeliveryError",
    "Transport",
    "channel_type_choices",
    "get_transport",
]
