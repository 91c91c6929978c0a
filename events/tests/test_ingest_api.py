"""POST /api/v1/events: single, batch, invalid items, partial acceptance, over quota, roles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from events.choices import MAX_BATCH_SIZE, ROW_OVERHEAD_BYTES
from events.models import CausalityBatch, Event, EventUsage

from .conftest import EVENTS_URL, event, iso, label, sample

pytestmark = pytest.mark.django_db


def errors_total(tenant, error_type: str) -> float:
    return sample(
        "traversion_events_errors_total", {"tenant_id": label(tenant), "error_type": error_type}
    )


def test_single_event_is_stored_with_every_field(tenant_a, api_key_for, post_events):
    client = api_key_for(tenant_a)
    body = {
        "timestamp": "2030-01-01T00:00:00Z",  # replaced below: must be recent
        "service_id": "checkout",
        "event_type": "deploy",
        "severity": "warning",
        "message": "deploy v2 — café",
        "attributes": {"version": "2.0", "canary": True},
        "correlation_id": "req-1",
        "trace_id": "trace-9",
    }
    body["timestamp"] = iso(timezone.now().replace(microsecond=0) - timedelta(seconds=5))
    response = post_events(client, body)
    assert response.status_code == 201, response.content
    payload = response.json()
    assert payload["accepted"] == 1 and payload["rejected"] == 0 and payload["errors"] == {}
    stored = Event.objects.get(pk=payload["ids"][0])
    assert stored.tenant == tenant_a
    assert stored.timestamp == datetime.fromisoformat(body["timestamp"])
    assert (stored.service_id, stored.event_type, stored.severity) == (
        "checkout",
        "deploy",
        "warning",
    )
    assert stored.message == body["message"]
    assert stored.attributes == {"version": "2.0", "canary": True}
    assert (stored.correlation_id, stored.trace_id) == ("req-1", "trace-9")
    attributes_size = len(json.dumps(body["attributes"], separators=(",", ":")))
    text_size = sum(
        len(body[k].encode())
        for k in ("service_id", "event_type", "severity", "message", "correlation_id", "trace_id")
    )
    assert stored.size_bytes == ROW_OVERHEAD_BYTES + attributes_size + text_size
    usage = EventUsage.objects.get(tenant=tenant_a)
    assert (usage.events_count, usage.bytes_used) == (1, stored.size_bytes)
    assert usage.last_event_at == stored.timestamp
    # The causality engine gets the ids through the outbox, not in the request.
    assert CausalityBatch.objects.get().event_ids == [stored.pk]


def test_defaults_timestamp_severity_and_naive_times_are_utc(tenant_a, api_key_for, post_events):
    client = api_key_for(tenant_a)
    before = timezone.now()
    response = post_events(
        client,
        [
            {"service_id": "api", "event_type": "log"},
            {"service_id": "api", "event_type": "log", "timestamp": "2000-01-01T00:00:00"},
        ],
    )
    assert response.status_code == 400  # the second one is far older than retention
    assert set(response.json()["errors"]) == {"1"}
    naive = (timezone.now() - timedelta(minutes=1)).replace(tzinfo=None, microsecond=0)
    response = post_events(
        client,
        [
            {"service_id": "api", "event_type": "log"},
            {"service_id": "api", "event_type": "log", "timestamp": naive.isoformat()},
        ],
    )
    assert response.status_code == 201, response.content
    first, second = (Event.objects.get(pk=pk) for pk in response.json()["ids"])
    assert first.severity == "info" and first.attributes == {} and first.message == ""
    assert before <= first.timestamp <= timezone.now()
    assert second.timestamp == naive.replace(tzinfo=UTC)


def test_batch_of_1000_in_one_request(tenant_a, api_key_for, post_events):
    now = timezone.now()
    batch = [
        event(f"svc-{i % 7}", "log", now - timedelta(seconds=i), attributes={"i": i})
        for i in range(MAX_BATCH_SIZE)
    ]
    labels = {"tenant_id": label(tenant_a), "event_type": "log", "service_id": "svc-0"}
    before = sample("traversion_events_total", labels)
    response = post_events(api_key_for(tenant_a), batch)
    assert response.status_code == 201, response.content
    ids = response.json()["ids"]
    assert len(ids) == MAX_BATCH_SIZE == Event.objects.count()
    # ids come back in the order of the items
    assert [Event.objects.get(pk=ids[i]).attributes["i"] for i in (0, 500, 999)] == [0, 500, 999]
    usage = EventUsage.objects.get(tenant=tenant_a)
    assert usage.events_count == MAX_BATCH_SIZE
    assert usage.bytes_used == sum(Event.objects.values_list("size_bytes", flat=True))
    after = sample("traversion_events_total", labels)
    assert after - before == len([i for i in range(MAX_BATCH_SIZE) if i % 7 == 0])


def test_batch_over_the_limit_is_refused_whole(tenant_a, api_key_for, post_events):
    batch = [{"service_id": "a", "event_type": "log"}] * (MAX_BATCH_SIZE + 1)
    response = post_events(api_key_for(tenant_a), batch)
    assert response.status_code == 400
    assert "at most 1000" in response.json()["detail"]
    assert not Event.objects.exists()


def invalid_batch() -> list:
    now = timezone.now()
    return [
        event("checkout", "deploy", now),
        event("checkout", "error", now, severity="fatal"),
        {"event_type": "error", "colour": "red"},
        "not an object",
        event("checkout", "Error Type", now),
    ]


def test_invalid_items_answer_per_item_errors_and_store_nothing(tenant_a, api_key_for, post_events):
    before = errors_total(tenant_a, "validation")
    response = post_events(api_key_for(tenant_a), invalid_batch())
    assert response.status_code == 400
    body = response.json()
    assert body["accepted"] == 0 and body["rejected"] == 4 and body["ids"] == []
    assert set(body["errors"]) == {"1", "2", "3", "4"}
    assert set(body["errors"]["1"]) == {"severity"}
    assert set(body["errors"]["2"]) == {"service_id", "colour"}
    assert body["errors"]["2"]["service_id"] == ["This field is required."]
    assert set(body["errors"]["3"]) == {"non_field_errors"}
    assert set(body["errors"]["4"]) == {"event_type"}
    assert "partial=true" in body["detail"]
    assert not Event.objects.exists()
    assert not CausalityBatch.objects.exists()
    assert errors_total(tenant_a, "validation") - before == 4


def test_partial_acceptance_stores_only_the_valid_items(tenant_a, api_key_for, post_events):
    response = post_events(api_key_for(tenant_a), invalid_batch(), partial=True)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["accepted"] == 1 and body["rejected"] == 4
    assert set(body["errors"]) == {"1", "2", "3", "4"}
    assert list(Event.objects.values_list("pk", "event_type")) == [(body["ids"][0], "deploy")]
    assert EventUsage.objects.get(tenant=tenant_a).events_count == 1


def test_partial_with_nothing_valid_is_400(tenant_a, api_key_for, post_events):
    response = post_events(api_key_for(tenant_a), [{"service_id": "x"}], partial=True)
    assert response.status_code == 400
    assert response.json()["errors"] == {"0": {"event_type": ["This field is required."]}}
    assert not Event.objects.exists()


def test_partial_flag_must_be_a_boolean(tenant_a, api_key_for):
    response = api_key_for(tenant_a).post(
        f"{EVENTS_URL}?partial=maybe", {"service_id": "a", "event_type": "log"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"partial": ["Expected true or false."]}
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message", "nul \x00 byte"),
        ("message", "x" * 10_001),
        ("message", 42),
        ("service_id", "has space"),
        ("service_id", "s" * 129),
        ("event_type", "x" * 65),
        ("correlation_id", "\ud800"),
        ("attributes", ["not", "an", "object"]),
        ("attributes", {"k": "nul \x00"}),
        ("attributes", {"big": "x" * 20_000}),
        ("timestamp", "yesterday"),
        ("timestamp", 1_700_000_000),
        ("severity", "ERROR"),
    ],
)
def test_bad_field_values_are_400_not_500(tenant_a, api_key_for, post_events, field, value):
    item = {"service_id": "api", "event_type": "error", field: value}
    # json.dumps escapes what the test client's renderer cannot encode (lone surrogates).
    body = json.dumps([item])
    response = api_key_for(tenant_a).generic(
        "POST", EVENTS_URL, body, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]["0"]) == [field]
    assert not Event.objects.exists()


def test_timestamps_in_the_future_are_refused(tenant_a, api_key_for, post_events):
    client = api_key_for(tenant_a)
    soon = timezone.now() + timedelta(seconds=60)
    later = timezone.now() + timedelta(minutes=30)
    response = post_events(client, [event("a", "log", soon), event("a", "log", later)])
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"1"}
    assert "future" in response.json()["errors"]["1"]["timestamp"][0]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('"just a string"', "application/json"),
        ("[]", "application/json"),
        ("{not json", "application/json"),
        ("[" * 100_000 + "]" * 100_000, "application/json"),
        (
            '{"service_id": "a", "event_type": "log", "attributes": {"x": 1e400}}',
            "application/json",
        ),
        ('{"service_id": "a", "event_type": "log", "attributes": {"x": NaN}}', "application/json"),
    ],
)
def test_bad_bodies_are_400(tenant_a, api_key_for, body, content_type):
    response = api_key_for(tenant_a).generic("POST", EVENTS_URL, body, content_type=content_type)
    assert response.status_code == 400, response.content
    assert not Event.objects.exists()


def test_over_quota_is_429_and_stores_nothing(tenant_a, api_key_for, post_events):
    client = api_key_for(tenant_a)
    now = timezone.now()
    first = post_events(client, [event("a", "log", now, message="x" * 100)])
    assert first.status_code == 201
    used = EventUsage.objects.get(tenant=tenant_a).bytes_used
    tenant_a.storage_quota_bytes = used + 500
    tenant_a.save()
    before = errors_total(tenant_a, "quota_exceeded")
    # Three events of ~300 bytes: the batch does not fit, so none of it is stored.
    batch = [event("a", "log", now, message="y" * 200) for _ in range(3)]
    response = post_events(client, batch)
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "quota_exceeded"
    assert body["quota_bytes"] == used + 500 and body["used_bytes"] == used
    assert body["requested_bytes"] > 500
    assert "nothing was stored" in body["detail"]
    assert Event.objects.count() == 1
    assert CausalityBatch.objects.count() == 1
    assert EventUsage.objects.get(tenant=tenant_a).bytes_used == used
    assert errors_total(tenant_a, "quota_exceeded") - before == 3
    # One that fits is still accepted.
    assert post_events(client, [event("a", "log", now)]).status_code == 201


def test_quota_is_checked_atomically_when_charging(tenant_a):
    """The conditional UPDATE refuses a charge that a concurrent request made too large."""
    from events.ingest import charge_usage

    tenant_a.storage_quota_bytes = 1_000
    tenant_a.save()
    EventUsage.objects.create(tenant=tenant_a, bytes_used=900)
    now = timezone.now()
    assert not charge_usage(tenant_a, 1, 101, now)
    assert charge_usage(tenant_a, 1, 100, now)
    usage = EventUsage.objects.get(tenant=tenant_a)
    assert (usage.bytes_used, usage.events_count) == (1_000, 1)
    assert not charge_usage(tenant_a, 1, 1, now)


def test_quota_of_another_tenant_does_not_count(tenant_a, tenant_b, api_key_for, post_events):
    EventUsage.objects.create(tenant=tenant_b, bytes_used=tenant_b.storage_quota_bytes)
    response = post_events(api_key_for(tenant_a), {"service_id": "a", "event_type": "log"})
    assert response.status_code == 201
    assert (
        post_events(api_key_for(tenant_b), {"service_id": "a", "event_type": "log"}).status_code
        == 429
    )


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("member", 201), ("admin", 201)])
def test_writing_needs_member_role(tenant_a, api_key_for, post_events, role, status):
    response = post_events(
        api_key_for(tenant_a, role=role), {"service_id": "a", "event_type": "log"}
    )
    assert response.status_code == status
    assert Event.objects.count() == (1 if status == 201 else 0)


def test_users_post_with_jwt_and_anonymous_is_401(tenant_a, client_for, api_client, post_events):
    body = {"service_id": "a", "event_type": "log"}
    assert post_events(client_for("member"), body).status_code == 201
    assert post_events(client_for("viewer"), body).status_code == 403
    assert post_events(client_for("outsider"), body).status_code == 403
    assert post_events(api_client, body).status_code == 401
    assert Event.objects.get().tenant == tenant_a


def test_processing_duration_is_observed_per_event(tenant_a, api_key_for, post_events):
    before = sample("traversion_event_processing_duration_seconds_count")
    batch = [{"service_id": "a", "event_type": "log"}] * 7
    assert post_events(api_key_for(tenant_a), batch).status_code == 201
    assert sample("traversion_event_processing_duration_seconds_count") - before == 7


def test_unknown_field_names_are_echoed_safely(tenant_a, api_key_for):
    body = '[{"service_id": "a", "event_type": "log", "\\ud800bad": 1}]'
    response = api_key_for(tenant_a).generic(
        "POST", EVENTS_URL, body, content_type="application/json"
    )
    assert response.status_code == 400
    assert list(response.json()["errors"]["0"]) == ["?bad"]


def test_timestamps_with_any_offset_are_stored_in_utc(tenant_a, api_key_for, post_events):
    moment = (timezone.now() - timedelta(minutes=5)).replace(microsecond=0)
    # -20:00 is valid ISO 8601 that PostgreSQL would refuse as an offset.
    local = moment.astimezone(UTC).replace(tzinfo=None) - timedelta(hours=20)
    response = post_events(
        api_key_for(tenant_a),
        {"service_id": "a", "event_type": "log", "timestamp": local.isoformat() + "-20:00"},
    )
    assert response.status_code == 201, response.content
    assert Event.objects.get().timestamp == moment
    bad = post_events(
        api_key_for(tenant_a),
        {"service_id": "a", "event_type": "log", "timestamp": "0001-01-01T00:00:00+05:00"},
    )
    assert bad.status_code == 400
    assert list(bad.json()["errors"]["0"]) == ["timestamp"]
