"""Choices and constants of the alerting app."""

from __future__ import annotations

from django.db import models


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"
    SECURITY = "security", "Security"


class Datasource(models.TextChoices):
    SQL = "sql", "SQL (tenant-scoped views)"
    PROMETHEUS = "prometheus", "Prometheus (PromQL)"
    # Alerts pushed by Prometheus/Alertmanager into /api/v2/alerts or /webhook/alerts.
    EXTERNAL = "external", "External (Prometheus / Alertmanager push)"


class Operator(models.TextChoices):
    GT = ">", ">"
    GE = ">=", ">="
    LT = "<", "<"
    LE = "<=", "<="
    EQ = "==", "=="
    NE = "!=", "!="


class InstanceState(models.TextChoices):
    INACTIVE = "inactive", "Inactive"
    PENDING = "pending", "Pending"
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"
    NODATA = "nodata", "No data"
    ERROR = "error", "Error"
    FLAPPING = "flapping", "Flapping"


#: States in which an instance counts as an active alert.
ACTIVE_STATES = (InstanceState.PENDING, InstanceState.FIRING, InstanceState.FLAPPING)


class RuleHealth(models.TextChoices):
    """Outcome of a rule's last evaluation (the rule itself, not its instances)."""

    UNKNOWN = "unknown", "Not evaluated yet"
    OK = "ok", "OK"
    NODATA = "nodata", "No data"
    ERROR = "error", "Error"


class ChannelType(models.TextChoices):
    EMAIL = "email", "Email"
    SLACK = "slack", "Slack"
    PAGERDUTY = "pagerduty", "PagerDuty"
    WEBHOOK = "webhook", "Webhook"


class NotificationKind(models.TextChoices):
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"
    REPEAT = "repeat", "Repeat (still firing after cooldown)"
    ACKNOWLEDGE = "acknowledge", "Acknowledged"
    TEST = "test", "Test"
    #: Entered `flapping`: notified once, then quiet until the instance is stable again.
    FLAPPING = "flapping", "Flapping"
    #: Any other transition (pending, back to inactive, nodata, error, recovery): history
    #: only, no channel is notified.
    STATE = "state", "State change (history only)"


class NotificationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending (claimed by a worker)"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SUPPRESSED_SILENCE = "suppressed_silence", "Suppressed by silence"
    SUPPRESSED_COOLDOWN = "suppressed_cooldown", "Suppressed by cooldown"
    GROUPED = "grouped", "Sent as part of a group"


class MatchOp(models.TextChoices):
    EQ = "=", "="
    NE = "!=", "!="
    RE = "=~", "=~"
    NRE = "!~", "!~"


class AuditAction:
    RULE_CREATED = "rule.created"
    RULE_UPDATED = "rule.updated"
    RULE_DELETED = "rule.deleted"
    RULE_TOGGLED = "rule.toggled"
    RULE_TEST_FIRED = "rule.test_fired"
    INSTANCE_ACKNOWLEDGED = "instance.acknowledged"
    SILENCE_CREATED = "silence.created"
    SILENCE_EXPIRED = "silence.expired"
    CHANNEL_CREATED = "channel.created"
    CHANNEL_UPDATED = "channel.updated"
    CHANNEL_DELETED = "channel.deleted"
    CHANNEL_TESTED = "channel.tested"
    SILENCE_UPDATED = "silence.updated"
    NOTIFICATION_RESENT = "notification.resent"


#: Kinds recorded in history that no channel is told about.
HISTORY_ONLY_KINDS = frozenset({NotificationKind.STATE})

#: Flapping: more than FLAP_THRESHOLD state changes within FLAP_WINDOW_SECONDS.
FLAP_THRESHOLD = 6
FLAP_WINDOW_SECONDS = 600
#: A grouped message lists this many instances and counts the rest.
GROUP_LIST_LIMIT = 5

#: Whether a channel type sends resolved notifications when the channel does not say.
SEND_RESOLVED_DEFAULT = {
    ChannelType.EMAIL: False,
    ChannelType.SLACK: False,
    ChannelType.PAGERDUTY: True,
    ChannelType.WEBHOOK: True,
}
#: Channel types that are told when an instance is acknowledged.
ACKNOWLEDGE_CHANNEL_TYPES = frozenset({ChannelType.PAGERDUTY})
#: Celery task that delivers one group of ledger rows (see alerts/delivery.py).
DELIVER_GROUP_TASK = "alerts.deliver_group"
