"""Channel config as the API and the admin show and accept it: secrets are write-only.

A stored secret (webhook URL, routing key, SMTP password, signing secret) is shown as
`MASK`. On update, a secret that is absent or still equal to `MASK` keeps its stored value,
so a client (or the admin form) can send back what it was shown without erasing it.
Which keys are secrets, and what a valid config is, is the transport's own knowledge
(`alerts.channels.get_transport(type)`), never repeated here.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from .channels.base import MASK

__all__ = ["MASK", "configured_secrets", "masked_config", "merge_and_validate"]


def transport_for(channel_type: str):
    """The transport (an instance) of a channel type; KeyError/ValueError when unknown."""
    from .channels import get_transport

    transport = get_transport(channel_type)
    return transport() if isinstance(transport, type) else transport


def secret_fields(channel_type: str) -> tuple[str, ...]:
    try:
        return tuple(transport_for(channel_type).secret_fields)
    except (KeyError, ValueError, LookupError):
        return ()


def masked_config(channel_type: str, config: dict | None) -> dict:
    """The config with every non-empty secret replaced by MASK."""
    try:
        return transport_for(channel_type).redact(dict(config or {}))
    except (KeyError, ValueError, LookupError):
        return {}


def configured_secrets(channel_type: str, config: dict | None) -> dict[str, bool]:
    """{secret name: whether a value is stored} for the type's secrets."""
    config = config or {}
    return {name: bool(config.get(name)) for name in secret_fields(channel_type)}


def merge_and_validate(
    channel_type: str,
    new_config: Any,
    old_config: dict | None = None,
    old_type: str | None = None,
) -> dict:
    """Keep stored secrets that were not re-sent, then let the transport validate.

    Raises django ValidationError with the transport's message.
    """
    if not isinstance(new_config, dict):
        raise ValidationError("config must be an object")
    merged = dict(new_config)
    old_config = old_config or {}
    for name in secret_fields(channel_type):
        if merged.get(name) in (None, MASK):
            if old_type == channel_type and old_config.get(name):
                merged[name] = old_config[name]
            elif merged.get(name) == MASK:
                # A mask with nothing behind it is not a value.
                merged.pop(name)
    try:
        transport = transport_for(channel_type)
    except (KeyError, ValueError, LookupError) as exc:
        raise ValidationError(f"unknown channel type {channel_type!r}") from exc
    return transport.validate_config(merged)
