"""Silences: Alertmanager matchers; they suppress notifications, never states or history;
when they end, still-firing alerts are notified again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from alerts.evaluation.state import apply_samples
from alerts.models import AlertInstance, Silence
from alerts.services import expire_silence
from alerts.silences import matches, validate_matchers
from tenants.models import AuditEvent

from .engine_helpers import at, history, ledger, make_channel, make_rule, sample

F, R, I = "firing", "resolved", "inactive"  # noqa: E741


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ({"name": "service", "op": "=", "value": "api"}, {"service": "api"}, True),
        ({"name": "service", "op": "=", "value": "api"}, {"service": "api-2"}, False),
        ({"name": "service", "op": "!=", "value": "api"}, {"service": "db"}, True),
        ({"name": "service", "op": "!=", "value": "api"}, {"service": "api"}, False),
        # Regular expressions are anchored, as in Alertmanager.
        ({"name": "service", "op": "=~", "value": "api|db"}, {"service": "db"}, True),
        ({"name": "service", "op": "=~", "value": "api"}, {"service": "api-2"}, False),
        ({"name": "service", "op": "!~", "value": "api.*"}, {"service": "db"}, True),
        ({"name": "service", "op": "!~", "value": "api.*"}, {"service": "api-2"}, False),
        # A missing label matches as the empty string.
        ({"name": "team", "op": "=", "value": ""}, {"service": "api"}, True),
        ({"name": "team", "op": "!=", "value": "ops"}, {}, True),
        ({"name": "team", "op": "=~", "value": ".+"}, {}, False),
    ],
)
def test_matcher_semantics(matcher, labels, expected):
    assert matches([matcher], labels) is expected


def test_all_matchers_must_match():
    matchers = [
        {"name": "alertname", "op": "=", "value": "disk"},
        {"name": "host", "op": "=~", "value": "web-.*"},
    ]
    assert matches(matchers, {"alertname": "disk", "host": "web-1"})
    assert not matches(matchers, {"alertname": "disk", "host": "db-1"})


def test_alertmanager_shape_is_accepted_and_bad_matchers_refused():
    assert validate_matchers(
        [{"name": "a", "value": "x.*", "isRegex": True, "isEqual": False}]
    ) == [{"name": "a", "op": "!~", "value": "x.*"}]
    with pytest.raises(ValidationError) as caught:
        validate_matchers([{"name": "1bad", "value": "x"}, {"name": "a", "op": "=~", "value": "("}])
    assert "name '1bad' is not a valid label name" in caught.value.messages[0]
    assert "invalid regular expression" in caught.value.messages[1]


def silence(tenant, starts, ends, **labels):
    return Silence.objects.create(
        tenant=tenant,
        matchers=[{"name": k, "op": "=", "value": v} for k, v in labels.items()],
        starts_at=starts,
        ends_at=ends,
    )


@pytest.mark.django_db
def test_a_silence_suppresses_notifications_never_states_or_history(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=60_000)
    silence(tenant_a, at(-10), at(100), alertname="errors_high")
    apply_samples(rule, [sample(20, service="api")], now=at(0))
    apply_samples(rule, [sample(20, service="api")], now=at(60))  # cooldown over, but silenced
    apply_samples(rule, [sample(1, service="api")], now=at(90))

    assert history(rule) == [("firing", I, F), ("resolved", F, R)]  # evaluation went on
    assert ledger(rule) == [
        ("firing", "suppressed_silence", "hook"),
        ("resolved", "suppressed_silence", "hook"),
    ]


@pytest.mark.django_db
def test_a_silence_only_matches_its_labels(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], condition_operator="", threshold=None)
    silence(tenant_a, at(-10), at(100), service="db")
    apply_samples(rule, [sample(None, service="api"), sample(None, service="db")], now=at(0))
    statuses = dict(
        AlertInstance.objects.filter(rule=rule).values_list(
            "labels__service", "events__notifications__status"
        )
    )
    assert statuses == {"api": "queued", "db": "suppressed_silence"}


@pytest.mark.django_db
def test_another_tenants_silence_does_not_apply(tenant_a, tenant_b):
    rule = make_rule(tenant_a, [make_channel(tenant_a)])
    silence(tenant_b, at(-10), at(100), alertname="errors_high")
    apply_samples(rule, [sample(20)], now=at(0))
    assert ledger(rule) == [("firing", "queued", "hook")]


@pytest.mark.django_db
def test_when_a_silence_runs_out_the_next_evaluation_notifies_again(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=600_000)
    silence(tenant_a, at(-10), at(45), alertname="errors_high")
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(20)], now=at(30))  # still silenced: nothing new
    assert AlertInstance.objects.get(rule=rule).notifications_silenced is True
    apply_samples(rule, [sample(20)], now=at(60))  # the silence ended at 45
    apply_samples(rule, [sample(20)], now=at(90))  # notified: back to the cooldown

    assert history(rule) == [("firing", I, F), ("repeat", F, F)]
    assert ledger(rule) == [
        ("firing", "suppressed_silence", "hook"),
        ("repeat", "queued", "hook"),
    ]
    assert AlertInstance.objects.get(rule=rule).notifications_silenced is False


@pytest.mark.django_db
def test_expiring_a_silence_notifies_still_firing_alerts_at_once(tenant_a, users):
    from django.utils import timezone

    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=600_000)
    now = timezone.now()
    held = silence(tenant_a, now - timedelta(minutes=1), now + timedelta(hours=1), service="api")
    apply_samples(rule, [sample(20, service="api"), sample(20, service="db")], now=now)

    events = expire_silence(held, users["admin"])

    assert [(e.kind, e.labels) for e in events] == [("repeat", {"service": "api"})]
    held.refresh_from_db()
    assert held.ends_at <= timezone.now()
    assert sorted(ledger(rule)) == sorted(
        [
            ("firing", "queued", "hook"),
            ("firing", "suppressed_silence", "hook"),
            ("repeat", "queued", "hook"),
        ]
    )
    audit = AuditEvent.objects.get(action="silence.expired")
    assert (audit.actor, audit.tenant, audit.details) == ("admin_a", tenant_a, {"silence": held.pk})
    with pytest.raises(ValidationError, match="already expired"):
        expire_silence(held, users["admin"])


@pytest.mark.django_db
def test_an_acknowledged_alert_is_not_renotified_when_its_silence_ends(tenant_a, users):
    from alerts.services import acknowledge

    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=600_000)
    silence(tenant_a, at(-10), at(45), alertname="errors_high")
    apply_samples(rule, [sample(20)], now=at(0))
    acknowledge(AlertInstance.objects.get(rule=rule), users["member"], "known", now=at(5))
    apply_samples(rule, [sample(20)], now=at(60))
    assert [h[0] for h in history(rule)] == ["firing", "acknowledge"]
