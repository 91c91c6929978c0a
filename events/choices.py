"""Choices and limits of the events app: what an event may contain and how big it may be."""

from __future__ import annotations

from django.db import models


class Severity(models.TextChoices):
    DEBUG = "debug", "Debug"
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
    CRITICAL = "critical", "Critical"


#: Severities that count as errors for the anomaly score.
ERROR_SEVERITIES = (Severity.ERROR, Severity.CRITICAL)


class EventType:
    """Event types the causality engine knows a prior for (docs/causality.md).

    Any lowercase slug is accepted as an event type; these are the ones with meaning.
    Types outside this list are stored as sent and reported as `other` in metric labels,
    so a client inventing types cannot blow up the label cardinality.
    """

    DEPLOY = "deploy"
    CONFIG_CHANGE = "config_change"
    ERROR = "error"
    EXCEPTION = "exception"
    ALERT = "alert"
    AUTH = "auth"
    SECURITY = "security"
    METRIC = "metric"
    LOG = "log"


KNOWN_EVENT_TYPES = frozenset(
    value for name, value in vars(EventType).items() if name.isupper() and isinstance(value, str)
)
#: Event types that count as errors for the anomaly score (besides error severities).
ERROR_EVENT_TYPES = (EventType.ERROR, EventType.EXCEPTION)
OTHER_LABEL = "other"


def event_type_label(event_type: str) -> str:
    """The metric label for an event type: itself when known, else `other`."""
    return event_type if event_type in KNOWN_EVENT_TYPES else OTHER_LABEL


class CausalityType(models.TextChoices):
    """What kind of cause a link describes (derived from the pair of event types)."""

    DEPLOYMENT = "deployment", "Deployment"
    CONFIGURATION = "configuration", "Configuration change"
    ERROR_PROPAGATION = "error_propagation", "Error propagation"
    ALERT_TRIGGER = "alert_trigger", "Alert trigger"
    SECURITY = "security", "Security"
    CORRELATION = "correlation", "Shared correlation id"


class EventErrorType:
    """`error_type` label values of traversion_events_errors_total."""

    VALIDATION = "validation"
    QUOTA_EXCEEDED = "quota_exceeded"
    CAUSALITY = "causality"


class QueryType:
    """`query_type` label values of traversion_queries_total."""

    LIST = "list"
    RETRIEVE = "retrieve"
    ROOT_CAUSE = "root_cause"


# --- ingestion limits ---------------------------------------------------------------
MAX_BATCH_SIZE = 1_000
MAX_SERVICE_ID_LENGTH = 128
MAX_EVENT_TYPE_LENGTH = 64
MAX_ID_LENGTH = 128  # correlation_id, trace_id
MAX_MESSAGE_LENGTH = 10_000
MAX_ATTRIBUTES_BYTES = 16_384
#: An event may be at most this far ahead of the server clock (client clock skew).
MAX_FUTURE_SKEW_SECONDS = 300
#: Bytes charged per event on top of its variable-length fields (timestamps, ids, indexes).
ROW_OVERHEAD_BYTES = 64

# --- tasks ---------------------------------------------------------------------------
PROCESS_BATCH_TASK = "events.process_causality_batch"
SWEEP_TASK = "events.sweep_causality_batches"
RETENTION_TASK = "events.enforce_retention"
