"""Generic webhook: Alertmanager's webhook JSON (version 4), signed.

The body is what Alertmanager's webhook_config posts, so any receiver written for
Alertmanager accepts it. Headers:

- `X-Traversion-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body bytes with the
  channel's `secret` (only when a secret is set). Verify it over the raw body before
  parsing it.
- `X-Traversion-Idempotency-Key`: the same for every attempt of one message, including a
  re-send after a worker was lost mid-send: a receiver that remembers it sees each
  message once (delivery itself is at-least-once, see docs/alerting.md).
- `X-Traversion-Test: true` on a test firing; `X-Traversion-Redelivery: true` on a re-send
  after an interrupted attempt.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from ..choices import ChannelType
from .base import (
    AlertMessage,
    Transport,
    encode_json,
    http_timeout,
    isoformat,
    post,
    raise_for_response,
)

SIGNATURE_HEADER = "X-Traversion-Signature"
IDEMPOTENCY_HEADER = "X-Traversion-Idempotency-Key"
TEST_HEADER = "X-Traversion-Test"
REDELIVERY_HEADER = "X-Traversion-Redelivery"
MAX_TIMEOUT_SECONDS = 60


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookTransport(Transport):
    type = ChannelType.WEBHOOK.value
    label = ChannelType.WEBHOOK.label
    # The URL is shown back (users need to see where alerts go) but, like every URL, never
    # logged: it may embed a token.
    secret_fields = ("secret",)
    send_resolved_default = True

    def validate_config(self, config: Any) -> dict:
        config = self.check_keys(config, {"url", "secret", "timeout", "max_alerts"})
        cleaned: dict[str, Any] = {"url": self.clean_url(config, "url", required=True)}
        secret = config.get("secret") or ""
        if not isinstance(secret, str):
            raise ValidationError({"secret": "Must be a string."})
        cleaned["secret"] = secret
        timeout = config.get("timeout")
        if timeout not in (None, ""):
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float)
                or not 0 < timeout <= MAX_TIMEOUT_SECONDS
            ):
                raise ValidationError(
                    {
                        "timeout": f"Seconds to wait for the answer, between 0 and {MAX_TIMEOUT_SECONDS}."
                    }
                )
            cleaned["timeout"] = float(timeout)
        max_alerts = config.get("max_alerts")
        if max_alerts not in (None, ""):
            if isinstance(max_alerts, bool) or not isinstance(max_alerts, int) or max_alerts < 0:
                raise ValidationError({"max_alerts": "A whole number, 0 for no limit."})
            cleaned["max_alerts"] = max_alerts
        return cleaned

    def render(self, message: AlertMessage, channel=None) -> dict:
        config = self.config_of(channel)
        limit = config.get("max_alerts") or 0
        alerts = message.alerts[:limit] if limit else message.alerts
        group_labels = {"alertname": message.rule_name}
        if message.tenant:
            group_labels["tenant"] = message.tenant
        return {
            "version": "4",
            "groupKey": "{}:{"
            + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items()))
            + "}",
            "truncatedAlerts": message.count - len(alerts),
            "status": message.status,
            "receiver": channel.name if channel is not None else "",
            "groupLabels": group_labels,
            "commonLabels": message.common_labels,
            "commonAnnotations": message.common_annotations,
            "externalURL": settings.PUBLIC_URL,
            "alerts": [
                {
                    "status": item.status,
                    "labels": item.labels,
                    "annotations": item.annotations,
                    "startsAt": isoformat(item.starts_at),
                    "endsAt": isoformat(item.ends_at),
                    "generatorURL": item.url,
                    "fingerprint": item.fingerprint,
                }
                for item in alerts
            ],
        }

    def send(self, channel, message: AlertMessage) -> None:
        config = self.config_of(channel)
        body = encode_json(self.render(message, channel))
        headers = {IDEMPOTENCY_HEADER: message.idempotency_key}
        if message.is_test:
            headers[TEST_HEADER] = "true"
        if message.redelivery:
            headers[REDELIVERY_HEADER] = "true"
        if config["secret"]:
            headers[SIGNATURE_HEADER] = sign(config["secret"], body)
        response = post(
            config["url"],
            body,
            provider="Webhook",
            headers=headers,
            timeout=http_timeout(config.get("timeout")),
        )
        raise_for_response(response, "Webhook")
