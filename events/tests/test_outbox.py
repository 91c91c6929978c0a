"""The outbox between ingestion and the engine: enqueue on commit, claim, sweep, give up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.causality import outbox
from events.causality.outbox import MAX_ATTEMPTS, process_batch, sweep
from events.ingest import ingest
from events.models import CausalityBatch, CausalLink

from .conftest import label, sample

pytestmark = pytest.mark.django_db


def incident(now):
    return [
        {
            "service_id": "api",
            "event_type": "deploy",
            "timestamp": (now - timedelta(seconds=60)).isoformat(),
        },
        {
            "service_id": "api",
            "event_type": "error",
            "timestamp": (now - timedelta(seconds=30)).isoformat(),
        },
    ]


def test_batch_id_is_enqueued_only_after_commit(tenant_a, django_capture_on_commit_callbacks):
    sent = []
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = ingest(tenant_a, incident(timezone.now()), enqueue=sent.append)
    assert sent == []  # nothing leaves before the transaction commits
    for callback in callbacks:  # (the alert engine's eager evaluation hooks in too)
        callback()
    assert sent == [result.batch_id]
    assert CausalityBatch.objects.get(pk=result.batch_id).event_ids == result.ids


def test_a_batch_is_processed_once(tenant_a):
    result = ingest(tenant_a, incident(timezone.now()), enqueue=lambda _: None)
    first = process_batch(result.batch_id)
    assert first is not None and len(first.links) == 1
    assert not CausalityBatch.objects.exists()
    assert process_batch(result.batch_id) is None  # already done (or taken elsewhere)
    assert CausalLink.objects.count() == 1


def test_a_claimed_batch_is_left_alone_until_its_lease_expires(tenant_a):
    result = ingest(tenant_a, incident(timezone.now()), enqueue=lambda _: None)
    CausalityBatch.objects.update(claimed_at=timezone.now(), attempts=1)
    assert process_batch(result.batch_id) is None
    CausalityBatch.objects.update(
        claimed_at=timezone.now() - outbox.CLAIM_LEASE - timedelta(seconds=1)
    )
    assert process_batch(result.batch_id) is not None
    assert CausalLink.objects.count() == 1


def test_a_failing_batch_is_released_counted_and_finally_dropped(tenant_a, monkeypatch):
    result = ingest(tenant_a, incident(timezone.now()), enqueue=lambda _: None)

    def broken(ids):
        raise RuntimeError("engine bug")

    monkeypatch.setattr(outbox, "process_events", broken)
    labels = {"tenant_id": label(tenant_a), "error_type": "causality"}
    before = sample("traversion_events_errors_total", labels)
    with pytest.raises(RuntimeError):
        process_batch(result.batch_id)
    batch = CausalityBatch.objects.get()
    assert batch.claimed_at is None and batch.attempts == 1  # free for the retry
    assert sample("traversion_events_errors_total", labels) - before == 2

    CausalityBatch.objects.update(attempts=MAX_ATTEMPTS)
    assert process_batch(result.batch_id) is None
    assert not CausalityBatch.objects.exists()
    assert sample("traversion_events_errors_total", labels) - before == 4


def test_sweep_resends_forgotten_and_abandoned_batches(tenant_a):
    now = timezone.now()
    make = lambda **kw: CausalityBatch.objects.create(tenant=tenant_a, event_ids=[], **kw)  # noqa: E731
    fresh = make(enqueued_at=now)
    forgotten = make(enqueued_at=now - outbox.RESEND_AFTER - timedelta(seconds=1))
    working = make(enqueued_at=now - timedelta(hours=1), claimed_at=now - timedelta(seconds=5))
    abandoned = make(
        enqueued_at=now - timedelta(hours=1),
        claimed_at=now - outbox.CLAIM_LEASE - timedelta(seconds=1),
    )
    sent = []
    assert sweep(sent.append, now) == sent == [forgotten.pk, abandoned.pk]
    forgotten.refresh_from_db()
    assert forgotten.enqueued_at == now
    # Re-sent just now: not again on the next sweep.
    assert sweep(sent.append, now + timedelta(seconds=60)) == []
    assert {fresh.pk, working.pk}.isdisjoint(sent)
