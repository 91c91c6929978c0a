"""Slack incoming webhook: a Block Kit message with a plain `text` fallback.

Slack answers 200 `ok`; 400 invalid_payload, 403 action_prohibited, 404 channel_not_found
or no_service and 410 channel_is_archived mean the webhook will never work as configured
(permanent); 429 (with Retry-After) and 5xx are retried. Incoming webhooks have no
idempotency key, so a delivery interrupted after Slack accepted it is sent again, marked
as a possible duplicate (at-least-once, see docs/alerting.md).
"""

from __future__ import annotations

from typing import Any

from ..choices import ChannelType
from .base import (
    AlertMessage,
    Transport,
    encode_json,
    format_value,
    post,
    raise_for_response,
)

SEVERITY_ICON = {
    "critical": ":red_circle:",
    "security": ":closed_lock_with_key:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}
RESOLVED_ICON = ":large_green_circle:"
ACK_ICON = ":eyes:"
# Block Kit limits: header text 150 chars, section text 3000, a field 2000, button label 75.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000


def escape(text: str) -> str:
    """Slack mrkdwn control characters (&, <, >) as Slack asks for them."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _labels_line(labels: dict) -> str:
    return " ".join(f"`{escape(k)}={escape(v)}`" for k, v in sorted(labels.items()))


class SlackTransport(Transport):
    type = ChannelType.SLACK.value
    label = ChannelType.SLACK.label
    secret_fields = ("webhook_url",)
    send_resolved_default = False

    def validate_config(self, config: Any) -> dict:
        config = self.check_keys(config, {"webhook_url"})
        return {"webhook_url": self.clean_url(config, "webhook_url", required=True)}

    def render(self, message: AlertMessage, channel=None) -> dict:
        if message.kind == "acknowledge":
            icon = ACK_ICON
        elif message.status == "resolved":
            icon = RESOLVED_ICON
        else:
            icon = SEVERITY_ICON.get(message.severity, ":bell:")
        blocks: list[dict] = [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": _cut(f"{message.title}", HEADER_LIMIT),
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(f"{icon} *{escape(message.summary)}*", SECTION_LIMIT),
                },
            },
        ]
        fields = [
            f"*Severity*\n{escape(message.severity)}",
            f"*Status*\n{escape(message.state_word.lower())}",
            f"*Value*\n{escape(format_value(message.value))}",
        ]
        if message.tenant:
            fields.append(f"*Tenant*\n{escape(message.tenant)}")
        blocks.append(
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": _cut(f, FIELD_LIMIT)} for f in fields],
            }
        )
        if message.description and message.description != message.summary:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": _cut(escape(message.description), SECTION_LIMIT),
                    },
                }
            )
        if message.labels:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": _cut("*Labels*\n" + _labels_line(message.labels), SECTION_LIMIT),
                    },
                }
            )
        if message.count > 1:
            lines = [
                f"• <{item.url}|{escape(item.summary or item.fingerprint)}> "
                f"value {escape(format_value(item.value))} {_labels_line(item.labels)}"
                for item in message.listed
            ]
            if message.more:
                lines.append(f"_and {message.more} more_")
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": _cut(
                            f"*{message.count} alerts*\n" + "\n".join(lines), SECTION_LIMIT
                        ),
                    },
                }
            )
        buttons = []
        if message.runbook_url:
            buttons.append(
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Runbook"},
                    "url": message.runbook_url,
                }
            )
        buttons.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "View alert"},
                "url": message.instance_url,
            }
        )
        blocks.append({"type": "actions", "elements": buttons})
        context = f"Traversion · fingerprint `{message.fingerprint}`"
        if message.redelivery:
            context += " · re-sent after an interrupted delivery; may be a duplicate"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
        return {"text": message.text, "blocks": blocks}

    def send(self, channel, message: AlertMessage) -> None:
        url = self.config_of(channel)["webhook_url"]
        response = post(url, encode_json(self.render(message, channel)), provider="Slack")
        raise_for_response(response, "Slack")
