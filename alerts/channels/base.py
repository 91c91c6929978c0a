"""The transport contract shared by every channel type, and the message they all render.

A transport is a small stateless class:

- `type`, `label`: the registry key (also the model's choice) and its display name;
- `secret_fields`: config keys that are write-only (never returned, never logged);
- `send_resolved_default`: whether resolved notifications go out when the channel does
  not say; `supports_acknowledge`: whether acknowledgements are forwarded;
- `validate_config(config) -> dict`: the cleaned config, or ValidationError({key: msg});
- `render(message, channel=None)`: exactly what `send` hands to the provider (with
  secrets masked when no channel is given, so a dry run can show it);
- `send(channel, message)`: deliver once, or raise PermanentDeliveryError (the channel
  is misconfigured or gone: retrying cannot help) or RetryableDeliveryError (timeouts,
  5xx, 429: try again later, no earlier than `retry_after` seconds when given).

Transports never put a URL, key or password into an exception message or a log line:
a Slack webhook URL or a PagerDuty routing key is a credential.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.urls import NoReverseMatch, reverse

from ..choices import GROUP_LIST_LIMIT, NotificationKind

if TYPE_CHECKING:
    from ..models import AlertEvent, Notification, NotificationChannel

logger = logging.getLogger(__name__)

#: What a secret looks like in a rendered preview or a redacted config.
MASK = "********"
#: Retry-After values above this are clamped: a provider asking for hours is treated as
#: "much later", and the ledger's retry limit decides the rest.
MAX_RETRY_AFTER_SECONDS = 3600
#: Prefix of `last_error` on rows whose previous attempt was interrupted (worker lost
#: mid-send): the provider may or may not have accepted that attempt.
INTERRUPTED_MARK = "interrupted:"


class DeliveryError(Exception):
    """A delivery did not go through. The message never contains secrets."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: bad configuration, channel deleted/archived, payload refused."""


class RetryableDeliveryError(DeliveryError):
    """Transient: timeout, connection refused, 5xx, 429. Try again, not before retry_after.

    `outcome_unknown`: the request left but no answer came back (a read timeout), so the
    provider may have taken it; the next attempt is marked as a possible duplicate.
    """

    def __init__(
        self, message: str, retry_after: float | None = None, *, outcome_unknown: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


# --- the message -------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertItem:
    """One alert instance inside a message (one ledger row, deduplicated by fingerprint)."""

    fingerprint: str
    status: str
    labels: dict
    annotations: dict
    value: float | None
    starts_at: datetime
    ends_at: datetime | None
    url: str
    instance_id: int | None
    event_id: int

    @property
    def summary(self) -> str:
        return self.annotations.get("summary", "")


@dataclass(frozen=True)
class AlertMessage:
    """What one delivery says: a group of ledger rows of one rule, channel and kind.

    `alerts` holds every instance of the group (the ledger has a row for each); the
    human-facing renderings list the first GROUP_LIST_LIMIT and count the rest.
    """

    kind: str
    status: str
    rule_id: int
    rule_name: str
    severity: str
    summary: str
    description: str
    runbook_url: str
    tenant: str
    alerts: tuple[AlertItem, ...]
    common_labels: dict
    common_annotations: dict
    group_key: str
    idempotency_key: str
    timestamp: datetime
    is_test: bool = False
    #: An earlier attempt of this message was interrupted after it may have reached the
    #: provider: the renderings say this one may be a duplicate.
    redelivery: bool = False

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_notifications(cls, rows: list[Notification]) -> AlertMessage:
        """Build the message for ledger rows that share a channel and a kind."""
        rows = sorted(rows, key=lambda r: r.pk)
        if not rows:
            raise ValueError("a message needs at least one ledger row")
        if len({(r.channel_id, r.kind) for r in rows}) != 1:
            raise ValueError("ledger rows of one message share channel and kind")
        kind = rows[0].kind
        status = "resolved" if kind == NotificationKind.RESOLVED else "firing"
        by_fingerprint: dict[str, AlertItem] = {}
        for row in rows:
            item = _item_for(row.event, status)
            by_fingerprint[item.fingerprint] = item  # a later row of one instance wins
        items = tuple(by_fingerprint.values())
        first_event = rows[0].event
        rule = first_event.rule
        first = items[0]
        common_annotations = _common([i.annotations for i in items])
        # One alert speaks for itself; a group only says what all its alerts share.
        shared = first.annotations if len(items) == 1 else common_annotations
        if len(items) == 1:
            summary = first.summary or first_event.message or rule.description or rule.name
        else:
            summary = f"{len(items)} alerts of {rule.name}"
        return cls(
            kind=kind,
            status=status,
            rule_id=rule.pk,
            rule_name=rule.name,
            severity=rule.severity,
            summary=summary,
            description=shared.get("description", "") or rule.description,
            runbook_url=shared.get("runbook_url", "") or rule.runbook_url,
            tenant=first_event.tenant.slug if first_event.tenant_id else "",
            alerts=items,
            common_labels=_common([i.labels for i in items]),
            common_annotations=common_annotations,
            group_key=rows[0].group_key,
            idempotency_key=hashlib.sha256(
                "|".join(sorted(r.idempotency_key for r in rows)).encode()
            ).hexdigest(),
            timestamp=max(r.event.timestamp for r in rows),
            is_test=any(r.is_test for r in rows),
            redelivery=any(r.last_error.startswith(INTERRUPTED_MARK) for r in rows),
        )

    # -- derived -----------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.alerts)

    @property
    def listed(self) -> tuple[AlertItem, ...]:
        return self.alerts[:GROUP_LIST_LIMIT]

    @property
    def more(self) -> int:
        return max(0, self.count - GROUP_LIST_LIMIT)

    @property
    def value(self) -> float | None:
        return self.alerts[0].value

    @property
    def instance_url(self) -> str:
        return self.alerts[0].url

    @property
    def labels(self) -> dict:
        """The labels that describe the whole message: the instance's, or the common ones."""
        return self.alerts[0].labels if self.count == 1 else self.common_labels

    @property
    def group_fingerprint(self) -> str:
        joined = ",".join(sorted(i.fingerprint for i in self.alerts))
        return hashlib.sha256(joined.encode()).hexdigest()[:32]

    @property
    def fingerprint(self) -> str:
        """The instance fingerprint for one alert, the group fingerprint for several."""
        return self.alerts[0].fingerprint if self.count == 1 else self.group_fingerprint

    @property
    def state_word(self) -> str:
        if self.kind == NotificationKind.ACKNOWLEDGE:
            return "ACKNOWLEDGED"
        if self.kind == NotificationKind.FLAPPING:  # told once, then quiet until stable
            return "FLAPPING"
        return self.status.upper()

    @property
    def title(self) -> str:
        """`[FIRING:3] rule` (Alertmanager's convention), `[TEST] ` in front of a test."""
        count = f":{self.count}" if self.count > 1 else ""
        test = "[TEST] " if self.is_test else ""
        return f"{test}[{self.state_word}{count}] {self.rule_name}"

    @property
    def text(self) -> str:
        """One line for notification previews and plain-text fallbacks."""
        line = f"{self.title}: {self.summary}" if self.summary else self.title
        if self.redelivery:
            line += " (re-sent after an interrupted delivery; may be a duplicate)"
        return line


def _item_for(event: AlertEvent, status: str) -> AlertItem:
    from ..dispatch import routing_labels
    from ..models import fingerprint_of

    rule = event.rule
    instance = event.instance
    labels = {**rule.labels, **routing_labels(event)}
    annotations = {k: str(v) for k, v in (event.annotations or {}).items()}
    if rule.description:
        annotations.setdefault("description", rule.description)
    if rule.runbook_url:
        annotations.setdefault("runbook_url", rule.runbook_url)
    if instance is not None:
        fingerprint = instance.fingerprint
        starts_at = instance.firing_since or instance.pending_since or event.timestamp
        resolved_at = instance.resolved_at
    else:
        fingerprint = fingerprint_of(rule.pk, event.labels)
        starts_at, resolved_at = event.timestamp, None
    ends_at = (resolved_at or event.timestamp) if status == "resolved" else None
    value = event.value if event.value is not None else getattr(instance, "value", None)
    return AlertItem(
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        annotations=annotations,
        value=value,
        starts_at=starts_at,
        ends_at=ends_at,
        url=link_for(event),
        instance_id=event.instance_id,
        event_id=event.pk,
    )


def _common(dicts: list[dict]) -> dict:
    if not dicts:
        return {}
    common = dict(dicts[0])
    for other in dicts[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common


def link_for(event: AlertEvent) -> str:
    """An absolute link back to the alert: the admin page when it is registered, else the API."""
    if event.instance_id is not None:
        name, api = "admin:alerts_alertinstance_change", f"/api/v1/instances/{event.instance_id}/"
        pk = event.instance_id
    else:
        name, api = "admin:alerts_alertevent_change", f"/api/v1/history/{event.pk}/"
        pk = event.pk
    try:
        path = reverse(name, args=[pk])
    except NoReverseMatch:
        path = api
    return settings.PUBLIC_URL + path


def format_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}"


def isoformat(moment: datetime | None) -> str:
    """RFC 3339 in UTC with a Z, as Alertmanager writes it."""
    if moment is None:
        return "0001-01-01T00:00:00Z"
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the transport contract ---------------------------------------------------------------


class Transport:
    """Base class of every channel type (see the module docstring for the contract)."""

    type: ClassVar[str]
    label: ClassVar[str]
    secret_fields: ClassVar[tuple[str, ...]] = ()
    send_resolved_default: ClassVar[bool] = False
    supports_acknowledge: ClassVar[bool] = False
    #: After a worker dies mid-send the attempt's outcome is unknown and it is sent
    #: again: "exactly-once" where the provider deduplicates it, else "at-least-once".
    guarantee: ClassVar[str] = "at-least-once"

    def validate_config(self, config: Any) -> dict:
        raise NotImplementedError

    def render(self, message: AlertMessage, channel: NotificationChannel | None = None) -> Any:
        raise NotImplementedError

    def send(self, channel: NotificationChannel, message: AlertMessage) -> None:
        raise NotImplementedError

    # -- helpers shared by the transports ------------------------------------------------
    def redact(self, config: dict) -> dict:
        """The config with every secret replaced by a mask (for API, admin and logs)."""
        return {k: (MASK if k in self.secret_fields and v else v) for k, v in config.items()}

    def config_of(self, channel: NotificationChannel | None) -> dict:
        """The channel's validated config; a masked placeholder config for a preview."""
        if channel is None:
            return {}
        try:
            return self.validate_config(channel.config)
        except ValidationError as exc:
            # The keys say what is wrong; the values may be secrets and are not repeated.
            keys = ", ".join(sorted(getattr(exc, "message_dict", {}) or ["config"]))
            raise PermanentDeliveryError(f"invalid channel configuration ({keys})") from None

    @staticmethod
    def check_keys(config: Any, allowed: set[str]) -> dict:
        if not isinstance(config, dict):
            raise ValidationError({"config": "Must be a JSON object."})
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ValidationError(
                {key: "Unknown setting for this channel type." for key in unknown}
            )
        # PostgreSQL's jsonb cannot store NUL characters: refuse them here, as a 400.
        bad = sorted(key for key, value in config.items() if _has_nul(value))
        if bad:
            raise ValidationError({key: "Null characters are not allowed." for key in bad})
        return dict(config)

    @staticmethod
    def clean_url(config: dict, key: str, *, required: bool) -> str | None:
        value = config.get(key)
        if value in (None, ""):
            if required:
                raise ValidationError({key: "This field is required."})
            return None
        if not isinstance(value, str):
            raise ValidationError({key: "Must be a URL string."})
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError:
            raise ValidationError({key: "Enter a valid http(s) URL."}) from None
        return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


# --- HTTP -----------------------------------------------------------------------------------


def encode_json(payload: Any) -> bytes:
    """The exact bytes posted (and signed): compact, key order as built."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def http_timeout(read_seconds: float | None = None) -> tuple[float, float]:
    return (
        settings.ALERT_HTTP_CONNECT_TIMEOUT_SECONDS,
        read_seconds or settings.ALERT_HTTP_READ_TIMEOUT_SECONDS,
    )


def post(
    url: str,
    body: bytes,
    *,
    provider: str,
    headers: dict | None = None,
    timeout: tuple[float, float] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST `body`, turning transport failures into delivery errors without the URL.

    requests puts the full URL (a credential for Slack and most webhooks) into its
    exception messages, so they are replaced by the exception type and the host.
    """
    host = urlparse(url).hostname or "?"
    all_headers = {
        "Content-Type": "application/json",
        "User-Agent": "Traversion-Alerting/1.0",
        **(headers or {}),
    }
    try:
        response = (session or requests).post(
            url,
            data=body,
            headers=all_headers,
            timeout=timeout or http_timeout(),
            allow_redirects=False,
        )
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
        raise PermanentDeliveryError(f"{provider}: invalid URL ({type(exc).__name__})") from None
    except requests.exceptions.ConnectTimeout as exc:
        raise RetryableDeliveryError(
            f"{provider}: timed out connecting to {host} ({type(exc).__name__})"
        ) from None
    except requests.exceptions.Timeout as exc:
        raise RetryableDeliveryError(
            f"{provider}: timed out waiting for {host} ({type(exc).__name__})",
            outcome_unknown=True,
        ) from None
    except requests.exceptions.RequestException as exc:
        raise RetryableDeliveryError(
            f"{provider}: could not reach {host} ({type(exc).__name__})"
        ) from None
    return response


def raise_for_response(response: requests.Response, provider: str) -> None:
    """2xx passes; 408, 429 and 5xx are retryable; every other answer is permanent."""
    code = response.status_code
    if 200 <= code < 300:
        return
    detail = _excerpt(response)
    message = f"{provider} answered HTTP {code}" + (f": {detail}" if detail else "")
    if code == 429 or code == 408 or code >= 500:
        raise RetryableDeliveryError(message, retry_after=parse_retry_after(response))
    if 300 <= code < 400:
        raise PermanentDeliveryError(message + " (redirects are not followed)")
    raise PermanentDeliveryError(message)


def _excerpt(response: requests.Response, limit: int = 200) -> str:
    try:
        text = response.text or ""
    except Exception:  # undecodable body: the status code says enough
        return ""
    return " ".join(text.split())[:limit]


def parse_retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), clamped to an hour."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
