"""Serializers of the alerting API (DESIGN §API surface: rule body, channel body).

Validation that belongs to a part of the engine is asked of that part: a query of the
datasource that runs it, a template of the template engine, a channel config of its
transport. What they say comes back as a 400 with the field's name, and nothing is stored.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import channel_config
from ..choices import ChannelType, Datasource, Severity
from ..models import (
    AlertEvent,
    AlertInstance,
    AlertRule,
    Notification,
    NotificationChannel,
    Silence,
)
from ..silences import LABEL_NAME, validate_matchers

#: Upper bound of every duration field (ms): a year. Longer is a typo, not an intent.
MAX_DURATION_MS = 365 * 24 * 3600 * 1000
#: Datasources a rule can be created with; `external` rules come from the receivers.
WRITABLE_DATASOURCES = [Datasource.SQL, Datasource.PROMETHEUS]
NUMERIC_NAME = re.compile(r"^\d+$")
#: Status of an alert pushed by Alertmanager (webhook).
RECEIVED_ALERT_STATUSES = [("firing", "firing"), ("resolved", "resolved")]


def django_messages(exc: DjangoValidationError) -> list[str] | dict[str, list[str]]:
    """A Django ValidationError as DRF field errors (a dict when it names keys)."""
    if hasattr(exc, "error_dict"):
        return {key: [str(m) for m in messages] for key, messages in exc.message_dict.items()}
    return [str(message) for message in exc.messages]


def request_tenant(serializer: serializers.Field):
    request = serializer.context.get("request")
    return getattr(request, "tenant", None)


# --- rules ----------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "array",
        "items": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
        "description": "Channel ids or names. A name is looked up among the tenant's "
        "channels, then the global ones. Responses list ids.",
    }
)
class ChannelListField(serializers.Field):
    """Channels by id or by name (the guide's `["slack", "email"]`)."""

    default_error_messages = {
        "not_a_list": "Expected a list of channel ids or names.",
        "bad_item": "Each channel is an id (integer) or a name (string).",
        "unknown": "Unknown channel: {ref!r}.",
    }

    def to_representation(self, value):
        return [channel.pk for channel in value.all()]

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list")
        rule = getattr(self.parent, "instance", None)
        tenant = rule.tenant if rule is not None else request_tenant(self)
        # A global rule pages only global channels; a tenant's rule its own or global ones.
        visible = (
            NotificationChannel.objects.visible_to(tenant)
            if tenant is not None
            else NotificationChannel.objects.filter(tenant__isnull=True)
        )
        resolved, errors = {}, []
        for ref in data:
            channel = None
            if isinstance(ref, int) and not isinstance(ref, bool):
                channel = visible.filter(pk=ref).first()
            elif isinstance(ref, str) and ref.strip():
                matches = {c.tenant_id: c for c in visible.filter(name=ref.strip())}
                channel = matches.get(getattr(tenant, "pk", None)) or matches.get(None)
            else:
                self.fail("bad_item")
            if channel is None:
                errors.append(self.error_messages["unknown"].format(ref=ref))
            else:
                resolved[channel.pk] = channel
        if errors:
            raise serializers.ValidationError(errors)
        return list(resolved.values())


class ChannelSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = NotificationChannel
        fields = ["id", "name", "type"]
        read_only_fields = fields


class AlertRuleSerializer(serializers.ModelSerializer):
    """The rule body of DESIGN §API surface; the guide's shape is a valid subset."""

    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    is_global = serializers.SerializerMethodField()
    datasource = serializers.ChoiceField(
        choices=Datasource.choices,
        default=Datasource.SQL,
        help_text="sql or prometheus; external rules are created by the alert receivers.",
    )
    channels = ChannelListField(required=False)
    channel_details = ChannelSummarySerializer(source="channels", many=True, read_only=True)
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    annotations = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="summary / description templates (Django template syntax).",
    )

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "tenant",
            "is_global",
            "name",
            "severity",
            "description",
            "runbook_url",
            "datasource",
            "query",
            "condition_operator",
            "threshold",
            "for_duration",
            "keep_firing_for",
            "cooldown",
            "evaluation_interval",
            "labels",
            "annotations",
            "channels",
            "channel_details",
            "enabled",
            "builtin",
            "health",
            "last_error",
            "last_evaluated_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "builtin",
            "health",
            "last_error",
            "last_evaluated_at",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {
            "for_duration": {"min_value": 0, "max_value": MAX_DURATION_MS},
            "keep_firing_for": {"min_value": 0, "max_value": MAX_DURATION_MS},
            "cooldown": {"min_value": 0, "max_value": MAX_DURATION_MS},
            "evaluation_interval": {"min_value": 1000, "max_value": MAX_DURATION_MS},
            # The tenant is not a field of the body, so name uniqueness is checked in
            # validate() against the caller's tenant.
            "name": {"validators": []},
        }

    def get_is_global(self, rule: AlertRule) -> bool:
        return rule.tenant_id is None

    def validate_name(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError("A name is required.")
        if NUMERIC_NAME.match(value):
            raise serializers.ValidationError("A name cannot be a number (it reads as an id).")
        if "/" in value:
            raise serializers.ValidationError("A name cannot contain '/'.")
        return value

    def validate_datasource(self, value: str) -> str:
        current = self.instance.datasource if self.instance is not None else None
        if current == Datasource.EXTERNAL and value != Datasource.EXTERNAL:
            raise serializers.ValidationError("An external rule stays external.")
        if current != Datasource.EXTERNAL and value not in WRITABLE_DATASOURCES:
            raise serializers.ValidationError(
                "External rules are created by the Prometheus / Alertmanager receivers."
            )
        return value

    def validate_labels(self, value: dict) -> dict:
        bad = sorted(name for name in value if not LABEL_NAME.match(name))
        if bad:
            raise serializers.ValidationError(
                [f"{name!r} is not a valid label name." for name in bad]
            )
        return value

    def validate_annotations(self, value: dict) -> dict:
        from ..templating import validate_template

        errors = {}
        for name, text in value.items():
            if not LABEL_NAME.match(name):
                errors[name] = [f"{name!r} is not a valid annotation name."]
                continue
            try:
                validate_template(text)
            except DjangoValidationError as exc:
                errors[name] = django_messages(exc)
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def validate(self, attrs: dict) -> dict:
        rule = self.instance

        def current(name, default=None):
            if name in attrs:
                return attrs[name]
            return getattr(rule, name) if rule is not None else default

        errors: dict[str, list[str]] = {}
        tenant = rule.tenant if rule is not None else request_tenant(self)
        name = current("name")
        if name is not None:
            same_name = AlertRule.objects.filter(name=name)
            same_name = (
                same_name.filter(tenant=tenant)
                if tenant is not None
                else same_name.filter(tenant__isnull=True)
            )
            if rule is not None:
                same_name = same_name.exclude(pk=rule.pk)
            if same_name.exists():
                errors["name"] = ["A rule with this name already exists."]

        datasource = current("datasource", Datasource.SQL)
        query = (current("query", "") or "").strip()
        if datasource != Datasource.EXTERNAL:
            if not query:
                errors["query"] = ["A query is required."]
            elif rule is None or "query" in attrs or "datasource" in attrs:
                from ..evaluation import get_datasource
                from ..evaluation.base import QueryError

                try:
                    get_datasource(datasource).validate(query, global_rule=tenant is None)
                except QueryError as exc:
                    errors["query"] = [str(exc)]
            attrs_query = attrs.get("query")
            if attrs_query is not None:
                attrs["query"] = attrs_query.strip()

        operator, threshold = current("condition_operator", ""), current("threshold")
        if operator and threshold is None:
            errors["threshold"] = ["An operator needs a threshold."]
        if threshold is not None and not operator:
            errors["condition_operator"] = [
                "A threshold needs an operator (leave both empty to fire on every row)."
            ]
        if current("severity", Severity.WARNING) == Severity.CRITICAL and not current(
            "runbook_url"
        ):
            errors["runbook_url"] = ["A critical rule needs a runbook URL."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class RuleToggleSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(
        required=False, help_text="The state to set; omitted: flip the current one."
    )


# --- instances, history, ledger ---------------------------------------------------------


class RuleSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertRule
        fields = ["id", "name", "severity", "datasource"]
        read_only_fields = fields


class AlertInstanceSerializer(serializers.ModelSerializer):
    rule = RuleSummarySerializer(read_only=True)
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = AlertInstance
        fields = [
            "id",
            "rule",
            "tenant",
            "fingerprint",
            "labels",
            "annotations",
            "state",
            "value",
            "pending_since",
            "firing_since",
            "last_evaluated_at",
            "last_state_change_at",
            "resolved_at",
            "last_notified_at",
            "acknowledged_by",
            "acknowledged_at",
            "ack_comment",
            "created_at",
        ]
        read_only_fields = fields


class AcknowledgeSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class AlertEventSerializer(serializers.ModelSerializer):
    rule = RuleSummarySerializer(read_only=True)
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    instance = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = AlertEvent
        fields = [
            "id",
            "rule",
            "instance",
            "tenant",
            "timestamp",
            "kind",
            "from_state",
            "to_state",
            "value",
            "labels",
            "annotations",
            "is_test",
            "message",
        ]
        read_only_fields = fields


class NotificationSerializer(serializers.ModelSerializer):
    channel = ChannelSummarySerializer(read_only=True)
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    rule = RuleSummarySerializer(source="event.rule", read_only=True)
    event = serializers.PrimaryKeyRelatedField(read_only=True)
    delivered_with = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Notification
        fields = [
            "id",
            "event",
            "rule",
            "channel",
            "tenant",
            "kind",
            "status",
            "group_key",
            "delivered_with",
            "attempts",
            "last_error",
            "next_attempt_at",
            "sent_at",
            "duration_ms",
            "is_test",
            "created_at",
        ]
        read_only_fields = fields


# --- silences ---------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "op": {"type": "string", "enum": ["=", "!=", "=~", "!~"]},
                "value": {"type": "string"},
                "isRegex": {"type": "boolean"},
                "isEqual": {"type": "boolean"},
            },
            "required": ["name", "value"],
        },
    }
)
class MatchersField(serializers.JSONField):
    """Alertmanager matchers: {name, op, value} (or Alertmanager's isRegex/isEqual)."""

    def to_internal_value(self, data):
        try:
            return validate_matchers(data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(django_messages(exc)) from exc


class SilenceSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    matchers = MatchersField()
    starts_at = serializers.DateTimeField(required=False)
    state = serializers.SerializerMethodField()

    class Meta:
        model = Silence
        fields = [
            "id",
            "tenant",
            "matchers",
            "starts_at",
            "ends_at",
            "comment",
            "state",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def get_state(self, silence: Silence) -> str:
        now = timezone.now()
        if silence.ends_at <= now:
            return "expired"
        return "active" if silence.starts_at <= now else "pending"

    def validate(self, attrs: dict) -> dict:
        now = timezone.now()
        starts_at = attrs.get("starts_at") or (
            self.instance.starts_at if self.instance is not None else now
        )
        ends_at = attrs.get("ends_at") or (self.instance.ends_at if self.instance else None)
        if ends_at is not None:
            if ends_at <= starts_at:
                raise serializers.ValidationError({"ends_at": ["Must be after starts_at."]})
            if ends_at <= now:
                raise serializers.ValidationError(
                    {"ends_at": ["Must be in the future (use expire to end a silence)."]}
                )
        attrs.setdefault("starts_at", starts_at)
        return attrs


# --- channels ---------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.OBJECT)
class ChannelConfigField(serializers.JSONField):
    """The type's config keys; secrets are write-only and shown as MASK."""


class NotificationChannelSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    is_global = serializers.SerializerMethodField()
    config = ChannelConfigField(
        help_text="email: to (list); slack: webhook_url; pagerduty: routing_key, api_url; "
        f"webhook: url, secret. Secrets are write-only: they read back as {channel_config.MASK!r}, "
        "and an update that omits one (or sends the mask) keeps the stored value."
    )
    secrets_configured = serializers.SerializerMethodField()
    type = serializers.ChoiceField(choices=ChannelType.choices)

    class Meta:
        model = NotificationChannel
        fields = [
            "id",
            "tenant",
            "is_global",
            "name",
            "type",
            "config",
            "secrets_configured",
            "enabled",
            "send_resolved",
            "is_fallback",
            "broken_at",
            "last_error",
            "last_error_at",
            "last_success_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "broken_at",
            "last_error",
            "last_error_at",
            "last_success_at",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {"name": {"validators": []}}

    def get_is_global(self, channel: NotificationChannel) -> bool:
        return channel.tenant_id is None

    def get_secrets_configured(self, channel: NotificationChannel) -> dict[str, bool]:
        return channel_config.configured_secrets(channel.type, channel.config)

    def to_representation(self, channel: NotificationChannel) -> dict:
        data = super().to_representation(channel)
        data["config"] = channel_config.masked_config(channel.type, channel.config)
        return data

    def validate_name(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError("A name is required.")
        if NUMERIC_NAME.match(value):
            raise serializers.ValidationError("A name cannot be a number (it reads as an id).")
        return value

    def validate(self, attrs: dict) -> dict:
        channel = self.instance
        tenant = channel.tenant if channel is not None else request_tenant(self)
        errors: dict[str, list[str]] = {}
        name = attrs.get("name", channel.name if channel else None)
        if name is not None:
            same = NotificationChannel.objects.filter(name=name).filter(
                Q(tenant=tenant) if tenant is not None else Q(tenant__isnull=True)
            )
            if channel is not None:
                same = same.exclude(pk=channel.pk)
            if same.exists():
                errors["name"] = ["A channel with this name already exists."]
        if attrs.get("is_fallback") and tenant is not None:
            other = NotificationChannel.objects.filter(tenant=tenant, is_fallback=True)
            if channel is not None:
                other = other.exclude(pk=channel.pk)
            if other.exists():
                errors["is_fallback"] = ["The tenant already has a fallback channel."]
        channel_type = attrs.get("type", channel.type if channel else None)
        if "config" in attrs or "type" in attrs or channel is None:
            try:
                attrs["config"] = channel_config.merge_and_validate(
                    channel_type,
                    attrs.get("config", channel.config if channel else {}),
                    channel.config if channel else None,
                    channel.type if channel else None,
                )
            except DjangoValidationError as exc:
                errors["config"] = django_messages(exc)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ChannelTestSerializer(serializers.Serializer):
    message = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=500,
        help_text="Optional text carried in the test message.",
    )


class ChannelTestResultSerializer(serializers.Serializer):
    channel = serializers.IntegerField(source="channel.pk")
    status = serializers.ChoiceField(choices=["sent", "failed"])
    error = serializers.CharField(allow_blank=True)
    duration_ms = serializers.FloatField()
    payload = serializers.JSONField(help_text="What was sent, secrets masked.")


# --- test firing (the guide's POST /api/internal/alerts/test) -------------------------------


class AlertTestRequestSerializer(serializers.Serializer):
    ruleName = serializers.CharField(max_length=200, help_text="The rule's name.")
    testData = serializers.DictField(
        help_text="A row as the datasource would return it: `value` (or the first numeric "
        "field) is the value, the other scalar fields become labels.",
    )
    dryRun = serializers.BooleanField(
        default=False, help_text="Only render; send nothing, record nothing."
    )

    def validate_testData(self, value: dict) -> dict:
        if len(value) > 100:
            raise serializers.ValidationError("At most 100 fields.")
        return value


class RenderedNotificationSerializer(serializers.Serializer):
    channel = serializers.CharField()
    channelId = serializers.IntegerField()
    type = serializers.CharField()
    status = serializers.CharField(help_text="queued, rendered (dry run) or not_sent")
    notificationId = serializers.IntegerField(allow_null=True)
    payload = serializers.JSONField()


class AlertTestResponseSerializer(serializers.Serializer):
    ruleName = serializers.CharField()
    ruleId = serializers.IntegerField()
    value = serializers.FloatField(allow_null=True)
    labels = serializers.DictField(child=serializers.CharField())
    annotations = serializers.DictField(child=serializers.CharField())
    conditionMet = serializers.BooleanField()
    dryRun = serializers.BooleanField()
    sent = serializers.BooleanField()
    eventId = serializers.IntegerField(allow_null=True)
    notifications = RenderedNotificationSerializer(many=True)


# --- receivers ---------------------------------------------------------------------------


class PostableAlertSerializer(serializers.Serializer):
    """One alert as Prometheus posts it to Alertmanager's API v2 (postableAlert)."""

    labels = serializers.DictField(child=serializers.CharField(allow_blank=True))
    annotations = serializers.DictField(
        child=serializers.CharField(allow_blank=True), required=False, default=dict
    )
    startsAt = serializers.DateTimeField(required=False, allow_null=True)
    endsAt = serializers.DateTimeField(required=False, allow_null=True)
    generatorURL = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=2000
    )

    def validate_labels(self, value: dict) -> dict:
        if not value.get("alertname", "").strip():
            raise serializers.ValidationError("An alert needs an alertname label.")
        bad = sorted(name for name in value if not LABEL_NAME.match(name))
        if bad:
            raise serializers.ValidationError(
                [f"{name!r} is not a valid label name." for name in bad]
            )
        return value


class WebhookAlertSerializer(PostableAlertSerializer):
    status = serializers.ChoiceField(choices=RECEIVED_ALERT_STATUSES, required=False)
    fingerprint = serializers.CharField(required=False, allow_blank=True, max_length=64)


class WebhookPayloadSerializer(serializers.Serializer):
    """Alertmanager's webhook body (version 4)."""

    version = serializers.CharField(required=False, default="4", max_length=8)
    groupKey = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    truncatedAlerts = serializers.IntegerField(required=False, min_value=0)
    status = serializers.ChoiceField(choices=RECEIVED_ALERT_STATUSES, required=False)
    receiver = serializers.CharField(required=False, allow_blank=True, max_length=200)
    groupLabels = serializers.DictField(child=serializers.CharField(), required=False)
    commonLabels = serializers.DictField(child=serializers.CharField(), required=False)
    commonAnnotations = serializers.DictField(
        child=serializers.CharField(allow_blank=True), required=False
    )
    externalURL = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    alerts = WebhookAlertSerializer(many=True)

    def validate_version(self, value: str) -> str:
        if value != "4":
            raise serializers.ValidationError("Only webhook version 4 is understood.")
        return value


class ReceiveResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    received = serializers.IntegerField()
    firing = serializers.IntegerField()
    resolved = serializers.IntegerField()
    rejected = serializers.ListField(child=serializers.DictField())
