"""Query filters of GET /api/v1/events (comma-separated values mean "any of")."""

from __future__ import annotations

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from .choices import Severity
from .ingest import to_utc
from .models import Event


class UTCDateTimeField(forms.DateTimeField):
    """ISO 8601, normalised to UTC (PostgreSQL refuses offsets beyond +-15:59)."""

    def to_python(self, value):
        parsed = IsoDateTimeField().to_python(value)
        if parsed is None:
            return None
        try:
            return to_utc(parsed)
        except ValueError:
            raise forms.ValidationError("Date-time out of range.", code="invalid") from None


class UTCDateTimeFilter(django_filters.Filter):
    field_class = UTCDateTimeField


class CharInFilter(django_filters.BaseInFilter, django_filters.CharFilter):
    pass


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    pass


class EventFilterSet(django_filters.FilterSet):
    since = UTCDateTimeFilter(
        field_name="timestamp", lookup_expr="gte", label="Events at or after (ISO 8601)"
    )
    until = UTCDateTimeFilter(
        field_name="timestamp", lookup_expr="lt", label="Events before (ISO 8601)"
    )
    service_id = CharInFilter(lookup_expr="in", label="Service id(s), comma-separated")
    event_type = CharInFilter(lookup_expr="in", label="Event type(s), comma-separated")
    severity = ChoiceInFilter(
        choices=Severity.choices, lookup_expr="in", label="Severity(ies), comma-separated"
    )
    correlation_id = django_filters.CharFilter()
    trace_id = django_filters.CharFilter()

    class Meta:
        model = Event
        fields = ["since", "until", "service_id", "event_type", "severity"]
