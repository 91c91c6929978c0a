"""django-filter filtersets of the alerting API.

Label filters take `name=value` (repeat the parameter to require several labels) and
compare one JSON key as text, which works the same on PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import UTC

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import ValidationError

from .choices import (
    ChannelType,
    Datasource,
    InstanceState,
    NotificationKind,
    NotificationStatus,
    RuleHealth,
    Severity,
)
from .models import AlertEvent, AlertInstance, AlertRule, Notification, NotificationChannel, Silence
from .silences import LABEL_NAME


def filter_labels(queryset, values: list[str], field: str = "labels"):
    """Keep rows whose `field` JSON has every `name=value` pair given."""
    for index, raw in enumerate(values):
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not sep or not LABEL_NAME.match(name):
            raise ValidationError({"label": [f"{raw!r}: expected name=value with a label name."]})
        alias = f"_label_{index}"
        queryset = queryset.alias(**{alias: KeyTextTransform(name, field)}).filter(**{alias: value})
    return queryset


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, converted to UTC: PostgreSQL refuses offsets beyond ±15:59, which
    Python accepts (up to ±23:59); a moment that cannot be expressed in UTC is invalid."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is not None and timezone.is_aware(parsed):
            try:
                return parsed.astimezone(UTC)
            except OverflowError:
                raise DjangoValidationError(
                    self.error_messages["invalid"], code="invalid"
                ) from None
        return parsed


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class LabelMultiFilterMixin:
    """Applies every `label` parameter (`?label=a=1&label=b=2`), not just the last one.

    The declared `label` filter only documents the parameter; django-filter hands a
    filter method a single value, so the values are read here.
    """

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        labels = self.data.getlist("label") if hasattr(self.data, "getlist") else []
        values = [v for raw in labels for v in raw.split(",") if v.strip()]
        return filter_labels(queryset, values) if values else queryset

    def noop(self, queryset, name, value):
        return queryset


class AlertRuleFilter(django_filters.FilterSet):
    severity = django_filters.MultipleChoiceFilter(choices=Severity.choices)
    datasource = django_filters.MultipleChoiceFilter(choices=Datasource.choices)
    health = django_filters.MultipleChoiceFilter(choices=RuleHealth.choices)
    name = django_filters.CharFilter(lookup_expr="icontains")
    is_global = django_filters.BooleanFilter(field_name="tenant", lookup_expr="isnull")

    class Meta:
        model = AlertRule
        fields = ["severity", "datasource", "enabled", "health", "builtin", "name", "is_global"]


class AlertInstanceFilter(LabelMultiFilterMixin, django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=InstanceState.choices)
    severity = django_filters.MultipleChoiceFilter(
        field_name="rule__severity", choices=Severity.choices
    )
    rule_name = django_filters.CharFilter(field_name="rule__name")
    label = django_filters.CharFilter(
        method="noop", help_text="name=value; repeat the parameter for several labels."
    )
    acknowledged = django_filters.BooleanFilter(
        field_name="acknowledged_at", lookup_expr="isnull", exclude=True
    )

    class Meta:
        model = AlertInstance
        fields = ["rule", "rule_name", "state", "severity", "label", "acknowledged"]


class AlertEventFilter(LabelMultiFilterMixin, django_filters.FilterSet):
    rule_name = django_filters.CharFilter(field_name="rule__name")
    state = django_filters.MultipleChoiceFilter(
        field_name="to_state", choices=InstanceState.choices
    )
    kind = django_filters.MultipleChoiceFilter(choices=NotificationKind.choices)
    since = UtcIsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")
    label = django_filters.CharFilter(
        method="noop", help_text="name=value; repeat the parameter for several labels."
    )

    class Meta:
        model = AlertEvent
        fields = ["rule", "rule_name", "instance", "state", "kind", "is_test", "since", "until"]


class NotificationFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=NotificationStatus.choices)
    kind = django_filters.MultipleChoiceFilter(choices=NotificationKind.choices)
    channel_type = django_filters.ChoiceFilter(
        field_name="channel__type", choices=ChannelType.choices
    )
    rule = django_filters.NumberFilter(field_name="event__rule")
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Notification
        fields = ["status", "channel", "channel_type", "kind", "event", "rule", "is_test"]


class NotificationChannelFilter(django_filters.FilterSet):
    type = django_filters.MultipleChoiceFilter(choices=ChannelType.choices)
    is_global = django_filters.BooleanFilter(field_name="tenant", lookup_expr="isnull")

    class Meta:
        model = NotificationChannel
        fields = ["type", "enabled", "is_fallback", "is_global"]


class SilenceFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(
        choices=[("active", "active"), ("pending", "pending"), ("expired", "expired")],
        method="filter_state",
    )

    class Meta:
        model = Silence
        fields = ["state"]

    def filter_state(self, queryset, name, value):
        now = timezone.now()
        if value == "active":
            return queryset.filter(starts_at__lte=now, ends_at__gt=now)
        if value == "pending":
            return queryset.filter(starts_at__gt=now)
        return queryset.filter(Q(ends_at__lte=now))
