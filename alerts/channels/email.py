"""Email over SMTP through Django's mail API (EmailMultiAlternatives).

The server comes from SMTP_HOST/PORT/USER/PASS/SECURITY (Django's EMAIL_* settings); the
password lives in the environment only, never in a channel's config. Recipients: the
channel's `to`, else ALERT_TO_EMAIL. Bodies: templates/alerts/email/notification.txt and
.html. The Message-ID is derived from the message's idempotency key, so a re-send after an
interrupted attempt carries the same Message-ID (mail systems that deduplicate on it show
it once; delivery itself is at-least-once, see docs/alerting.md).

SMTP 4xx answers, refused connections and timeouts are retried; 5xx answers (recipient
refused, authentication failed) are permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.template.loader import render_to_string

from ..choices import ChannelType
from .base import (
    AlertMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Transport,
    format_value,
    isoformat,
)

TEXT_TEMPLATE = "alerts/email/notification.txt"
HTML_TEMPLATE = "alerts/email/notification.html"
SUBJECT_LIMIT = 200


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValidationError({"to": "A list of email addresses."})


class EmailTransport(Transport):
    type = ChannelType.EMAIL.value
    label = ChannelType.EMAIL.label
    secret_fields = ()  # the SMTP password is a setting, never stored in a channel
    send_resolved_default = False

    def validate_config(self, config: Any) -> dict:
        config = self.check_keys(config, {"to"})
        recipients = _as_list(config.get("to"))
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(
                    {"to": f"{address!r} is not a valid email address."}
                ) from None
        if not recipients and not settings.ALERT_TO_EMAIL:
            raise ValidationError(
                {"to": "Give at least one recipient (or set ALERT_TO_EMAIL for a default)."}
            )
        return {"to": recipients}

    def recipients(self, channel) -> list[str]:
        if channel is None:
            return list(settings.ALERT_TO_EMAIL)
        return self.config_of(channel)["to"] or list(settings.ALERT_TO_EMAIL)

    def render(self, message: AlertMessage, channel=None) -> dict:
        context = {
            "message": message,
            "value": format_value(message.value),
            "items": [
                {
                    "item": item,
                    "value": format_value(item.value),
                    "labels": sorted(item.labels.items()),
                    "starts_at": isoformat(item.starts_at),
                }
                for item in message.listed
            ],
            "labels": sorted(message.labels.items()),
        }
        domain = settings.ALERT_FROM_EMAIL.rpartition("@")[2] or "traversion"
        subject = " ".join(message.text.split())
        return {
            "subject": subject[:SUBJECT_LIMIT],
            "from_email": settings.ALERT_FROM_EMAIL,
            "to": self.recipients(channel),
            "text": render_to_string(TEXT_TEMPLATE, context),
            "html": render_to_string(HTML_TEMPLATE, context),
            "headers": {
                "Message-ID": f"<{message.idempotency_key[:40]}@{domain}>",
                "X-Traversion-Fingerprint": message.fingerprint,
            },
        }

    def send(self, channel, message: AlertMessage) -> None:
        rendered = self.render(message, channel)
        if not rendered["to"]:
            raise PermanentDeliveryError(
                "email: no recipients (channel `to` and ALERT_TO_EMAIL are empty)"
            )
        email = EmailMultiAlternatives(
            subject=rendered["subject"],
            body=rendered["text"],
            from_email=rendered["from_email"],
            to=rendered["to"],
            headers=rendered["headers"],
            connection=get_connection(fail_silently=False),
        )
        email.attach_alternative(rendered["html"], "text/html")
        host = f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            text = f"email: every recipient refused by {host} (codes {sorted(set(codes))})"
            if codes and all(400 <= code < 500 for code in codes):
                raise RetryableDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"email: authentication refused by {host} ({exc.smtp_code})"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentDeliveryError(f"email: {host} does not support {exc}") from None
        except smtplib.SMTPResponseException as exc:
            text = f"email: {host} answered {exc.smtp_code} {_decode(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                raise RetryableDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except smtplib.SMTPException as exc:
            # A dropped connection mid-conversation: the server may have taken the message.
            raise RetryableDeliveryError(
                f"email: {host}: {type(exc).__name__} {exc}", outcome_unknown=True
            ) from None
        except ssl.SSLError as exc:
            # Certificate or protocol mismatch: a configuration problem, not a blip.
            raise PermanentDeliveryError(f"email: TLS failed with {host} ({exc.reason})") from None
        except TimeoutError as exc:
            raise RetryableDeliveryError(
                f"email: timed out talking to {host} ({type(exc).__name__})", outcome_unknown=True
            ) from None
        except OSError as exc:
            raise RetryableDeliveryError(
                f"email: could not reach {host} ({type(exc).__name__}: {exc.strerror or exc})"
            ) from None


def _decode(raw: Any) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:200]
