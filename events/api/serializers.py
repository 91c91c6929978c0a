"""Event representations, and the request and response shapes of the events API."""

from __future__ import annotations

from rest_framework import serializers

from ..choices import (
    MAX_ATTRIBUTES_BYTES,
    MAX_EVENT_TYPE_LENGTH,
    MAX_ID_LENGTH,
    MAX_MESSAGE_LENGTH,
    MAX_SERVICE_ID_LENGTH,
    Severity,
)
from ..models import Event


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = [
            "id",
            "timestamp",
            "service_id",
            "event_type",
            "severity",
            "message",
            "attributes",
            "correlation_id",
            "trace_id",
            "ingested_at",
        ]
        read_only_fields = fields


class EventInSerializer(serializers.Serializer):
    """One event as posted. Documents the request; `events.ingest` validates it (fast path)."""

    timestamp = serializers.DateTimeField(
        required=False,
        help_text="When it happened, ISO 8601 (no offset = UTC). Default: time of receipt. "
        "At most 5 minutes in the future, not older than EVENT_RETENTION_DAYS.",
    )
    service_id = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$",
        max_length=MAX_SERVICE_ID_LENGTH,
        help_text="The service it happened in.",
    )
    event_type = serializers.RegexField(
        r"^[a-z][a-z0-9_.-]*$",
        max_length=MAX_EVENT_TYPE_LENGTH,
        help_text="deploy, config_change, error, exception, alert, auth, security, metric, "
        "log, or any other lowercase slug (only the listed ones have causal priors).",
    )
    severity = serializers.ChoiceField(
        choices=Severity.choices, required=False, help_text="Default: info."
    )
    message = serializers.CharField(required=False, allow_blank=True, max_length=MAX_MESSAGE_LENGTH)
    attributes = serializers.DictField(
        required=False,
        help_text=f"Free JSON object, at most {MAX_ATTRIBUTES_BYTES} bytes "
        "(the `data` column of the SQL view `events`).",
    )
    correlation_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_ID_LENGTH,
        help_text="Events sharing it are linked across services by the causality engine.",
    )
    trace_id = serializers.CharField(required=False, allow_blank=True, max_length=MAX_ID_LENGTH)


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events stored.")
    rejected = serializers.IntegerField(help_text="Invalid events (not stored).")
    ids = serializers.ListField(child=serializers.IntegerField(), help_text="Ids, in order.")
    errors = serializers.DictField(
        child=serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
        help_text='Per invalid item: its index -> field -> messages, e.g. {"3": {"severity": [...]}}.',
    )


class IngestErrorSerializer(IngestResultSerializer):
    detail = serializers.CharField()


class QuotaExceededSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(help_text="quota_exceeded")
    quota_bytes = serializers.IntegerField()
    used_bytes = serializers.IntegerField()
    requested_bytes = serializers.IntegerField()


class ChainStepSerializer(serializers.Serializer):
    event = EventSerializer()
    causality_type = serializers.CharField(
        allow_null=True, help_text="How the previous step caused this one (null for the root)."
    )
    confidence = serializers.FloatField(allow_null=True)


class RootCandidateSerializer(serializers.Serializer):
    event = EventSerializer()
    confidence = serializers.FloatField(help_text="Product of the confidences along the path.")
    chain_length = serializers.IntegerField()


class RootCauseSerializer(serializers.Serializer):
    event = EventSerializer()
    root_cause = EventSerializer(help_text="The event itself when it has no known cause.")
    confidence = serializers.FloatField()
    chain_length = serializers.IntegerField()
    truncated = serializers.BooleanField(
        help_text="The walk stopped at the depth limit: the root may have causes of its own."
    )
    chain = ChainStepSerializer(many=True, help_text="From the root cause to the event.")
    candidates = RootCandidateSerializer(
        many=True, help_text="Every root found, most likely first."
    )
