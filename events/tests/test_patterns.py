"""The pattern detector's window: N links of one key within one window, counted once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.causality.patterns import LinkKey, detect_patterns
from events.causality.scoring import CausalityParams
from events.models import CausalPattern

from .conftest import label, sample

pytestmark = pytest.mark.django_db

PARAMS = CausalityParams(pattern_min_occurrences=5, pattern_window_seconds=3600)


def links(at, count, service="api"):
    return [
        LinkKey("deploy", "error", service, "deployment", at + timedelta(seconds=i))
        for i in range(count)
    ]


def detections(tenant):
    return sample(
        "traversion_patterns_detected_total",
        {"tenant_id": label(tenant), "pattern_type": "deployment"},
    )


def test_links_in_separate_windows_do_not_add_up(tenant_a):
    t = timezone.now() - timedelta(hours=5)
    before = detections(tenant_a)
    assert detect_patterns(tenant_a.pk, label(tenant_a), links(t, 4), PARAMS) == []
    # Two hours later: a new window, which starts again from these 4.
    assert (
        detect_patterns(tenant_a.pk, label(tenant_a), links(t + timedelta(hours=2), 4), PARAMS)
        == []
    )
    row = CausalPattern.objects.get()
    assert row.occurrences == 4 and row.window_start == t + timedelta(hours=2)
    # The fifth within that window makes it a pattern, once.
    found = detect_patterns(
        tenant_a.pk, label(tenant_a), links(t + timedelta(hours=2, minutes=30), 1), PARAMS
    )
    assert [p.pk for p in found] == [row.pk]
    assert detections(tenant_a) - before == 1
    assert (
        detect_patterns(
            tenant_a.pk, label(tenant_a), links(t + timedelta(hours=2, minutes=31), 9), PARAMS
        )
        == []
    )
    assert detections(tenant_a) - before == 1
    row.refresh_from_db()
    assert row.detected_at is not None and row.occurrences == 14


def test_keys_are_per_tenant_and_service(tenant_a, tenant_b):
    t = timezone.now() - timedelta(hours=1)
    detect_patterns(tenant_a.pk, label(tenant_a), links(t, 3) + links(t, 3, "db"), PARAMS)
    detect_patterns(tenant_b.pk, label(tenant_b), links(t, 3), PARAMS)
    assert not CausalPattern.objects.filter(detected_at__isnull=False).exists()
    assert CausalPattern.objects.filter(tenant=tenant_a).count() == 2
    found = detect_patterns(tenant_b.pk, label(tenant_b), links(t, 2), PARAMS)
    assert [(p.tenant_id, p.service_id) for p in found] == [(tenant_b.pk, "api")]
