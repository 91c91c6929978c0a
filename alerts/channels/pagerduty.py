"""PagerDuty Events API v2 (`POST /v2/enqueue`).

One event per alert instance, `dedup_key` = the instance fingerprint: trigger, acknowledge
and resolve of an instance carry the same key, so PagerDuty opens, acknowledges and
resolves the same alert, and a trigger sent twice (a retry after a lost answer, a worker
killed mid-send) lands on the open alert instead of paging again. PagerDuty groups alerts
into incidents on its side; a storm of N instances is N alerts there, never N pages for
one instance.

Answers: 202 accepted; 400 invalid event (permanent); 429 and 5xx retried (see
developer.pagerduty.com "Response Codes & Retry Logic").
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import ValidationError

from ..choices import ChannelType, NotificationKind, Severity
from .base import (
    MASK,
    AlertItem,
    AlertMessage,
    RetryableDeliveryError,
    Transport,
    encode_json,
    format_value,
    isoformat,
    post,
    raise_for_response,
)

#: Our severities on PagerDuty's four (critical, error, warning, info). Security alerts
#: are high urgency under PagerDuty's default urgency rules, like critical ones.
SEVERITY_MAP = {
    Severity.CRITICAL: "critical",
    Severity.SECURITY: "error",
    Severity.WARNING: "warning",
    Severity.INFO: "info",
}
SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255
ROUTING_KEY_RE = re.compile(r"^[A-Za-z0-9_+\-]{1,64}$")
#: Where a source label may come from, most specific first.
SOURCE_LABELS = ("instance", "host", "hostname", "service", "job")


def event_action(message: AlertMessage) -> str:
    if message.kind == NotificationKind.RESOLVED:
        return "resolve"
    if message.kind == NotificationKind.ACKNOWLEDGE:
        return "acknowledge"
    return "trigger"


def dedup_key(message: AlertMessage, item: AlertItem) -> str:
    """The instance fingerprint; a test firing gets its own key so it never touches a real alert."""
    if message.is_test:
        digest = hashlib.sha256(f"{item.fingerprint}:{message.idempotency_key}".encode())
        return f"traversion-test-{digest.hexdigest()[:32]}"
    return item.fingerprint[:DEDUP_KEY_LIMIT]


class PagerDutyTransport(Transport):
    type = ChannelType.PAGERDUTY.value
    label = ChannelType.PAGERDUTY.label
    secret_fields = ("routing_key",)
    send_resolved_default = True
    supports_acknowledge = True
    guarantee = "exactly-once"

    def validate_config(self, config: Any) -> dict:
        config = self.check_keys(config, {"routing_key", "api_url"})
        key = config.get("routing_key")
        if not key:
            raise ValidationError({"routing_key": "This field is required."})
        if not isinstance(key, str) or not ROUTING_KEY_RE.match(key.strip()):
            raise ValidationError(
                {
                    "routing_key": "Enter the integration (routing) key of an Events API v2 integration."
                }
            )
        api_url = self.clean_url(config, "api_url", required=False)
        return {"routing_key": key.strip(), "api_url": api_url or settings.PAGERDUTY_API_URL}

    def render(self, message: AlertMessage, channel=None) -> list[dict]:
        """The events posted, one per instance, in order."""
        routing_key = self.config_of(channel)["routing_key"] if channel is not None else MASK
        action = event_action(message)
        events = []
        for item in message.alerts:
            event: dict[str, Any] = {
                "routing_key": routing_key,
                "event_action": action,
                "dedup_key": dedup_key(message, item),
            }
            if action == "trigger":
                event["payload"] = self._payload(message, item)
                event["client"] = "Traversion"
                event["client_url"] = item.url
                links = [{"href": item.url, "text": "Alert in Traversion"}]
                if message.runbook_url:
                    links.append({"href": message.runbook_url, "text": "Runbook"})
                event["links"] = links
            events.append(event)
        return events

    def _payload(self, message: AlertMessage, item: AlertItem) -> dict:
        test = "[TEST] " if message.is_test else ""
        summary = item.summary or message.description or message.rule_name
        source = next((str(item.labels[k]) for k in SOURCE_LABELS if item.labels.get(k)), "")
        details: dict[str, Any] = {
            "rule": message.rule_name,
            "value": format_value(item.value),
            "labels": item.labels,
            "annotations": item.annotations,
            "fingerprint": item.fingerprint,
            "started_at": isoformat(item.starts_at),
        }
        if message.description:
            details["description"] = message.description
        if message.tenant:
            details["tenant"] = message.tenant
        if message.count > 1:
            details["group_size"] = message.count
        if message.is_test:
            details["test"] = True
        payload = {
            "summary": f"{test}[{message.state_word}] {message.rule_name}: {summary}"[
                :SUMMARY_LIMIT
            ],
            "source": source or message.tenant or "traversion",
            "severity": SEVERITY_MAP.get(message.severity, "warning"),
            "timestamp": isoformat(item.starts_at),
            "class": message.rule_name,
            "group": message.tenant or "global",
            "custom_details": details,
        }
        component = item.labels.get("service") or item.labels.get("job")
        if component:
            payload["component"] = str(component)
        return payload

    def send(self, channel, message: AlertMessage) -> None:
        api_url = self.config_of(channel)["api_url"]
        events = self.render(message, channel)
        # A storm of many instances must not outlive the delivery lease (after which the
        # recovery task would hand the group to another worker): past half the lease the
        # rest is left to the next attempt.
        budget = settings.ALERT_DELIVERY_LEASE_SECONDS / 2
        started = time.monotonic()
        with requests.Session() as session:
            # Every event is sent on each attempt: the ones PagerDuty already accepted are
            # deduplicated by their dedup_key, so a partial failure is safe to retry whole.
            for done, event in enumerate(events):
                if done and time.monotonic() - started > budget:
                    raise RetryableDeliveryError(
                        f"PagerDuty: {done} of {len(events)} events accepted before the "
                        "send budget ran out; the rest follow on the next attempt"
                    )
                response = post(api_url, encode_json(event), provider="PagerDuty", session=session)
                raise_for_response(response, "PagerDuty")
