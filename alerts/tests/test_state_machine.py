"""The state machine, driven through its plain functions with simulated time.

Each test asserts the whole history (AlertEvent rows) and the whole ledger
(Notification rows) of the rule, not just the last state.
"""

from __future__ import annotations

import pytest

from alerts.choices import InstanceState, RuleHealth
from alerts.evaluation.state import apply_samples, record_error, resolve_instance
from alerts.models import AlertEvent, AlertInstance

from .engine_helpers import at, history, ledger, make_channel, make_rule, refresh, sample

pytestmark = pytest.mark.django_db

F, R, P, I = "firing", "resolved", "pending", "inactive"  # noqa: E741


def only_instance(rule) -> AlertInstance:
    (instance,) = AlertInstance.objects.filter(rule=rule)
    return instance


def test_full_life_with_for_duration(tenant_a):
    hook = make_channel(tenant_a)
    rule = make_rule(tenant_a, [hook], for_duration=120_000)

    assert [e.to_state for e in apply_samples(rule, [sample(20)], now=at(0))] == [P]
    assert apply_samples(rule, [sample(25)], now=at(60)) == []
    assert only_instance(rule).state == P
    assert [e.to_state for e in apply_samples(rule, [sample(30)], now=at(120))] == [F]
    assert apply_samples(rule, [sample(30)], now=at(150)) == []
    assert [e.to_state for e in apply_samples(rule, [sample(5)], now=at(180))] == [R]

    assert history(rule) == [
        ("state", I, P),
        ("firing", P, F),
        ("resolved", F, R),
    ]
    # Pending is history only; the webhook is told about firing and resolved.
    assert ledger(rule) == [("firing", "queued", "hook"), ("resolved", "queued", "hook")]
    instance = only_instance(rule)
    assert instance.state == R
    assert instance.value == 5
    assert instance.resolved_at == at(180)
    assert instance.firing_since is None
    assert refresh(rule).health == RuleHealth.OK


def test_pending_that_clears_goes_back_to_inactive_without_a_page(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], for_duration=300_000)
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(2)], now=at(60))
    apply_samples(rule, [], now=at(120))  # missing from the result: no change, no row

    assert history(rule) == [("state", I, P), ("state", P, I)]
    assert ledger(rule) == []
    assert only_instance(rule).state == I


def test_every_row_fires_without_operator_and_absent_rows_resolve(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], condition_operator="", threshold=None)
    apply_samples(rule, [sample(None, ip="10.0.0.1"), sample(None, ip="10.0.0.2")], now=at(0))
    apply_samples(rule, [sample(None, ip="10.0.0.2")], now=at(30))

    states = dict(AlertInstance.objects.filter(rule=rule).values_list("labels__ip", "state"))
    assert states == {"10.0.0.1": R, "10.0.0.2": F}
    assert sorted(history(rule)) == sorted([("firing", I, F), ("firing", I, F), ("resolved", F, R)])
    assert [r[:2] for r in ledger(rule)] == [
        ("firing", "queued"),
        ("firing", "queued"),
        ("resolved", "queued"),
    ]


def test_keep_firing_for_holds_a_cleared_condition(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], keep_firing_for=90_000, cooldown=10**9)
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(1)], now=at(30))  # cleared: kept firing until 120
    assert only_instance(rule).state == F
    assert only_instance(rule).keep_firing_until == at(120)
    apply_samples(rule, [sample(1)], now=at(90))
    assert only_instance(rule).state == F
    apply_samples(rule, [sample(1)], now=at(120))
    assert history(rule) == [("firing", I, F), ("resolved", F, R)]
    assert ledger(rule) == [("firing", "queued", "hook"), ("resolved", "queued", "hook")]


def test_keep_firing_for_is_reset_when_the_condition_returns(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], keep_firing_for=60_000, cooldown=10**9)
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(1)], now=at(10))
    apply_samples(rule, [sample(20)], now=at(40))
    assert only_instance(rule).keep_firing_until is None
    apply_samples(rule, [sample(1)], now=at(80))
    apply_samples(rule, [sample(1)], now=at(130))  # 80 + 60 not reached yet
    assert only_instance(rule).state == F
    apply_samples(rule, [sample(1)], now=at(140))
    assert history(rule) == [("firing", I, F), ("resolved", F, R)]


def test_cooldown_repeats_a_still_firing_instance(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=60_000)
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(21)], now=at(30))  # within the cooldown: nothing
    apply_samples(rule, [sample(22)], now=at(60))  # repeat
    apply_samples(rule, [sample(23)], now=at(90))
    apply_samples(rule, [sample(24)], now=at(120))  # repeat
    assert history(rule) == [("firing", I, F), ("repeat", F, F), ("repeat", F, F)]
    assert ledger(rule) == [
        ("firing", "queued", "hook"),
        ("repeat", "queued", "hook"),
        ("repeat", "queued", "hook"),
    ]
    repeats = AlertEvent.objects.filter(rule=rule, kind="repeat").order_by("timestamp")
    assert [e.timestamp for e in repeats] == [at(60), at(120)]
    assert [e.value for e in repeats] == [22, 24]


def test_a_refiring_within_the_cooldown_is_recorded_but_suppressed(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=300_000)
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(1)], now=at(30))
    apply_samples(rule, [sample(20)], now=at(60))  # 60 s after the last page < 300 s
    assert history(rule) == [("firing", I, F), ("resolved", F, R), ("firing", R, F)]
    assert ledger(rule) == [
        ("firing", "queued", "hook"),
        ("resolved", "queued", "hook"),
        ("firing", "suppressed_cooldown", "hook"),
    ]


def test_acknowledge_stops_repeats_until_resolved(tenant_a, users):
    from alerts.services import acknowledge

    pagerduty = make_channel(tenant_a, name="pd", type="pagerduty")
    rule = make_rule(tenant_a, [pagerduty], cooldown=60_000)
    apply_samples(rule, [sample(20)], now=at(0))
    event = acknowledge(only_instance(rule), users["member"], "looking at it", now=at(10))
    assert event.kind == "acknowledge"
    assert event.message == "acknowledged by member: looking at it"
    instance = only_instance(rule)
    assert instance.acknowledged_by == users["member"]
    assert instance.ack_comment == "looking at it"

    apply_samples(rule, [sample(20)], now=at(60))
    apply_samples(rule, [sample(20)], now=at(180))  # no repeats while acknowledged
    apply_samples(rule, [sample(1)], now=at(200))
    instance = only_instance(rule)
    assert instance.acknowledged_at is None  # the acknowledgement ended with the alert
    apply_samples(rule, [sample(20)], now=at(600))
    apply_samples(rule, [sample(20)], now=at(660))  # a new episode repeats again

    assert history(rule) == [
        ("firing", I, F),
        ("acknowledge", F, F),
        ("resolved", F, R),
        ("firing", R, F),
        ("repeat", F, F),
    ]
    assert ledger(rule) == [
        ("firing", "queued", "pd"),
        ("acknowledge", "queued", "pd"),
        ("resolved", "queued", "pd"),
        ("firing", "queued", "pd"),
        ("repeat", "queued", "pd"),
    ]


def test_acknowledge_refuses_inactive_and_repeated_acknowledgements(tenant_a, users):
    from django.core.exceptions import ValidationError

    from alerts.services import acknowledge

    rule = make_rule(tenant_a, [make_channel(tenant_a)])
    apply_samples(rule, [sample(20)], now=at(0))
    acknowledge(only_instance(rule), users["member"], "", now=at(5))
    with pytest.raises(ValidationError, match="already acknowledged by member"):
        acknowledge(only_instance(rule), users["owner"], "", now=at(6))
    apply_samples(rule, [sample(1)], now=at(10))
    with pytest.raises(ValidationError, match="only an active alert"):
        acknowledge(only_instance(rule), users["owner"], "", now=at(20))
    assert [h[0] for h in history(rule)] == ["firing", "acknowledge", "resolved"]


def test_flapping_notifies_once_then_waits_for_a_stable_window(tenant_a):
    from alerts.choices import FLAP_THRESHOLD, FLAP_WINDOW_SECONDS

    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=0)
    values = [20, 1] * 6  # 12 evaluations, one every 30 s: a change at each one
    for step, value in enumerate(values):
        apply_samples(rule, [sample(value)], now=at(30 * step))

    expected = (
        [("firing", I, F)] + [("resolved", F, R), ("firing", R, F)] * 2 + [("resolved", F, R)]
    )
    assert len(expected) == FLAP_THRESHOLD
    expected.append(("flapping", R, "flapping"))  # the 7th change within the window
    assert history(rule) == expected
    assert ledger(rule) == [(kind, "queued", "hook") for kind, _, _ in expected]
    assert only_instance(rule).state == "flapping"

    # Stable (firing) but the window still holds changes: still flapping, silent.
    last_change = 30 * (len(values) - 1)
    apply_samples(rule, [sample(20)], now=at(last_change + 30))
    apply_samples(rule, [sample(20)], now=at(last_change + FLAP_WINDOW_SECONDS - 30))
    assert len(history(rule)) == len(expected)
    # A whole window without a change: back to firing, notified.
    apply_samples(rule, [sample(20)], now=at(last_change + 30 + FLAP_WINDOW_SECONDS + 1))
    assert history(rule)[len(expected) :] == [("firing", "flapping", F)]
    assert ledger(rule)[len(expected) :] == [("firing", "queued", "hook")]
    assert only_instance(rule).state == F


def test_nodata_pauses_an_alert_without_paging_or_resolving(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=10**9)
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [], now=at(60))  # the aggregate returned nothing
    assert refresh(rule).health == RuleHealth.NODATA
    assert only_instance(rule).state == InstanceState.NODATA
    apply_samples(rule, [sample(None)], now=at(120))  # a NULL value is no data either
    apply_samples(rule, [sample(30)], now=at(180))  # data is back, still firing
    assert refresh(rule).health == RuleHealth.OK
    apply_samples(rule, [], now=at(240))
    apply_samples(rule, [sample(2)], now=at(300))  # back, and the condition cleared

    assert history(rule) == [
        ("firing", I, F),
        ("state", F, "nodata"),
        ("state", "nodata", F),
        ("state", F, "nodata"),
        ("resolved", "nodata", R),
    ]
    assert ledger(rule) == [("firing", "queued", "hook"), ("resolved", "queued", "hook")]


def test_an_error_is_a_state_recorded_on_the_rule_and_its_instances(tenant_a):
    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=10**9)
    apply_samples(rule, [sample(20)], now=at(0))
    record_error(rule, "the query was cancelled after ALERT_SQL_TIMEOUT_MS=5000 ms", now=at(60))
    rule = refresh(rule)
    assert rule.health == RuleHealth.ERROR
    assert rule.last_error == "the query was cancelled after ALERT_SQL_TIMEOUT_MS=5000 ms"
    assert only_instance(rule).state == InstanceState.ERROR
    record_error(rule, "the query was cancelled after ALERT_SQL_TIMEOUT_MS=5000 ms", now=at(120))
    apply_samples(rule, [sample(1)], now=at(180))
    assert refresh(rule).health == RuleHealth.OK

    rule_events = list(
        AlertEvent.objects.filter(rule=rule, instance=None)
        .order_by("timestamp")
        .values_list("from_state", "to_state", "message")
    )
    assert rule_events == [
        (
            "",
            "error",
            "evaluation failed: the query was cancelled after ALERT_SQL_TIMEOUT_MS=5000 ms",
        ),
        ("error", "inactive", "evaluation recovered"),
    ]
    instance_events = list(
        AlertEvent.objects.filter(rule=rule, instance__isnull=False)
        .order_by("timestamp", "pk")
        .values_list("kind", "from_state", "to_state")
    )
    assert instance_events == [
        ("firing", I, F),
        ("state", F, "error"),
        ("resolved", "error", R),
    ]
    assert ledger(rule) == [("firing", "queued", "hook"), ("resolved", "queued", "hook")]


def test_global_rule_instances_belong_to_their_tenant_and_route_there(tenant_a, tenant_b):
    global_hook = make_channel(None, name="ops")
    alpha_hook = make_channel(tenant_a, name="alpha-hook")
    make_channel(tenant_b, name="beta-hook")
    rule = make_rule(None, [global_hook], name="cross_tenant")
    apply_samples(
        rule,
        [sample(50, tenant_id=tenant_a.pk), sample(2, tenant_id=tenant_b.pk)],
        now=at(0),
    )
    (instance,) = AlertInstance.objects.filter(rule=rule)
    assert instance.tenant == tenant_a
    assert instance.labels == {"tenant_id": str(tenant_a.pk)}
    assert ledger(rule) == [("firing", "queued", "alpha-hook"), ("firing", "queued", "ops")]
    assert alpha_hook.notifications.count() == 1


def test_external_pushes_do_not_resolve_what_they_do_not_mention(tenant_a):
    rule = make_rule(
        tenant_a,
        [make_channel(tenant_a)],
        datasource="external",
        query="",
        condition_operator="",
        threshold=None,
    )
    apply_samples(rule, [sample(None, alertname="disk", host="a")], now=at(0))
    apply_samples(rule, [sample(None, alertname="disk", host="b")], now=at(10))
    assert set(AlertInstance.objects.filter(rule=rule).values_list("state", flat=True)) == {F}
    events = resolve_instance(AlertInstance.objects.get(rule=rule, labels__host="a"), now=at(20))
    assert [(e.kind, e.to_state) for e in events] == [("resolved", R)]
    assert dict(AlertInstance.objects.filter(rule=rule).values_list("labels__host", "state")) == {
        "a": R,
        "b": F,
    }
