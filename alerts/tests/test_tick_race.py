"""Claiming due rules: two ticks racing for the same slot evaluate each rule once.

Real transactions on PostgreSQL (transactional_db): each thread has its own connection,
so the compare-and-set UPDATEs really contend for the rows.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from alerts.evaluation.runner import evaluate_rules
from alerts.evaluation.scheduling import claim, due_rules, next_slot
from alerts.models import AlertEvent, AlertRule
from alerts.tasks import run_tick
from metrics.catalogue import ALERT_EVALUATIONS

from .engine_helpers import make_rule

N_RULES = 40


def race(target, count=2):
    """Run `target(i)` in `count` threads released together; re-raise their errors."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []
    results: list = [None] * count

    def body(i):
        try:
            results[i] = target(i, barrier)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def due_world(transactional_db, tenant_a, tenant_b):
    now = timezone.now()
    rules = []
    for i in range(N_RULES):
        rule = make_rule(
            tenant_a if i % 2 else tenant_b,
            name=f"rule_{i}",
            query="SELECT 1 AS value",
            condition_operator=">",
            threshold=0,
            evaluation_interval=60_000,
        )
        if i % 4 == 0:  # some were never evaluated, the others are due since a while
            AlertRule.objects.filter(pk=rule.pk).update(
                next_evaluation_at=now - timedelta(seconds=i)
            )
        rules.append(rule)
    # Not due: a future slot, a disabled rule, a pushed (external) rule.
    make_rule(tenant_a, name="later", query="SELECT 1 AS value")
    AlertRule.objects.filter(name="later").update(next_evaluation_at=now + timedelta(minutes=1))
    make_rule(tenant_a, name="off", enabled=False)
    make_rule(tenant_a, name="pushed", datasource="external", query="")
    return now, rules


def test_both_ticks_read_the_same_slot_and_each_rule_is_claimed_once(due_world):
    now, rules = due_world

    def tick(i, barrier):
        due = due_rules(now)
        barrier.wait()  # both have read every due rule before either claims
        return due, claim(due, now)

    (due_0, won_0), (due_1, won_1) = race(tick)

    expected = {rule.pk for rule in rules}
    assert {d.rule_id for d in due_0} == {d.rule_id for d in due_1} == expected
    ids_0, ids_1 = {d.rule_id for d in won_0}, {d.rule_id for d in won_1}
    assert ids_0.isdisjoint(ids_1)
    assert ids_0 | ids_1 == expected
    # Each rule moved on to its next slot exactly once.
    for item in won_0 + won_1:
        assert AlertRule.objects.get(pk=item.rule_id).next_evaluation_at == next_slot(
            item.slot, 60_000, now
        )
    assert due_rules(now) == []


def test_two_racing_ticks_evaluate_each_rule_once(due_world):
    now, rules = due_world
    label_a, label_b = (str(rules[1].tenant_id), str(rules[0].tenant_id))
    before = sum(
        ALERT_EVALUATIONS.labels(tenant_id=label, result="firing")._value.get()
        for label in (label_a, label_b)
    )
    evaluated: list[list[int]] = [[], []]

    def tick(i, barrier):
        def evaluate_now(tenant_id, batch):
            ids = [d.rule_id for d in batch]
            evaluated[i].extend(ids)
            evaluate_rules(ids, now=now)

        barrier.wait()
        return run_tick(now, enqueue=evaluate_now)

    race(tick)

    assert sorted(evaluated[0] + evaluated[1]) == sorted(rule.pk for rule in rules)
    after = sum(
        ALERT_EVALUATIONS.labels(tenant_id=label, result="firing")._value.get()
        for label in (label_a, label_b)
    )
    assert after - before == N_RULES
    for rule in rules:
        events = list(AlertEvent.objects.filter(rule=rule).values_list("kind", flat=True))
        assert events == ["firing"], rule.name


def test_the_next_slot_keeps_the_cadence(transactional_db, tenant_a):
    now = timezone.now()
    assert next_slot(None, 60_000, now) == now + timedelta(seconds=60)
    assert next_slot(now - timedelta(seconds=1), 60_000, now) == now + timedelta(seconds=59)
    # Fell behind by more than one interval: start again from now.
    assert next_slot(now - timedelta(minutes=5), 60_000, now) == now + timedelta(seconds=60)

    rule = make_rule(tenant_a, query="SELECT 1 AS value", evaluation_interval=10_000)
    assert [d.rule_id for d in run_tick(now, enqueue=lambda tenant, batch: None)] == [rule.pk]
    assert run_tick(now + timedelta(seconds=9), enqueue=lambda tenant, batch: None) == []
    (again,) = run_tick(now + timedelta(seconds=10), enqueue=lambda tenant, batch: None)
    assert again.slot == now + timedelta(seconds=10)
    assert again.next_slot == now + timedelta(seconds=20)


def test_claimed_rules_fan_out_per_tenant(transactional_db, tenant_a, tenant_b):
    now = timezone.now()
    a = [make_rule(tenant_a, name=f"a{i}", query="SELECT 1 AS value") for i in range(3)]
    b = [make_rule(tenant_b, name=f"b{i}", query="SELECT 1 AS value") for i in range(2)]
    g = make_rule(None, name="g", query="SELECT 1 AS tenant_id, 1 AS value")
    sent = []
    run_tick(
        now, enqueue=lambda tenant, batch: sent.append((tenant, sorted(d.rule_id for d in batch)))
    )
    assert sorted(sent, key=lambda s: (s[0] is None, s[0] or 0)) == sorted(
        [
            (tenant_a.pk, sorted(r.pk for r in a)),
            (tenant_b.pk, sorted(r.pk for r in b)),
            (None, [g.pk]),
        ],
        key=lambda s: (s[0] is None, s[0] or 0),
    )
