"""GET /api/v1/events (filters, cursor pages), /events/{id}, and the query metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import Event

from .conftest import EVENTS_URL, event, iso, label, sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(tenant_a, api_key_for, post_events):
    """Ten events over ten minutes on two services, newest last."""
    now = timezone.now().replace(microsecond=0)
    items = [
        event(
            "api" if i % 2 else "db",
            ("error", "log", "deploy")[i % 3],
            now - timedelta(minutes=10 - i),
            severity=("info", "error")[i % 2],
            correlation_id=f"req-{i % 4}",
        )
        for i in range(10)
    ]
    response = post_events(api_key_for(tenant_a), items)
    assert response.status_code == 201
    return now, Event.objects.in_bulk(response.json()["ids"])


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_list_is_newest_first_with_every_field(stored, api_key_for, tenant_a):
    _, events = stored
    response = api_key_for(tenant_a).get(EVENTS_URL)
    expected = sorted(events.values(), key=lambda e: e.timestamp, reverse=True)
    assert ids(response) == [e.pk for e in expected]
    first = response.json()["results"][0]
    assert set(first) == {
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
    }
    assert response.json()["next"] is None


@pytest.mark.parametrize(
    ("query", "predicate"),
    [
        ("service_id=api", lambda e: e.service_id == "api"),
        ("service_id=api,db", lambda e: True),
        ("event_type=error,deploy", lambda e: e.event_type in ("error", "deploy")),
        ("severity=error", lambda e: e.severity == "error"),
        ("correlation_id=req-1", lambda e: e.correlation_id == "req-1"),
        ("service_id=db&event_type=log", lambda e: e.service_id == "db" and e.event_type == "log"),
    ],
)
def test_filters(stored, api_key_for, tenant_a, query, predicate):
    _, events = stored
    got = ids(api_key_for(tenant_a).get(f"{EVENTS_URL}?{query}"))
    assert sorted(got) == sorted(pk for pk, e in events.items() if predicate(e))
    assert got


def test_time_range(stored, api_key_for, tenant_a):
    now, events = stored
    since, until = now - timedelta(minutes=7), now - timedelta(minutes=3)
    got = ids(api_key_for(tenant_a).get(EVENTS_URL, {"since": iso(since), "until": iso(until)}))
    assert sorted(got) == sorted(pk for pk, e in events.items() if since <= e.timestamp < until)
    assert len(got) == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("severity=fatal", "severity"),
        ("cursor=not-a-cursor", "cursor"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=ten", "limit"),
    ],
)
def test_bad_query_parameters_are_400(stored, api_key_for, tenant_a, query, field):
    response = api_key_for(tenant_a).get(f"{EVENTS_URL}?{query}")
    assert response.status_code == 400
    assert field in response.json()


def test_cursor_pages_through_events_sharing_one_timestamp(tenant_a, api_key_for, post_events):
    """250 events without a timestamp get the same receipt time: pages stay exact."""
    client = api_key_for(tenant_a)
    response = post_events(client, [{"service_id": "a", "event_type": "log"}] * 250)
    assert response.status_code == 201
    assert Event.objects.values("timestamp").distinct().count() == 1
    seen, url, pages = [], f"{EVENTS_URL}?limit=100", 0
    while url:
        page = client.get(url)
        seen += ids(page)
        url = page.json()["next"]
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 250
    assert seen == sorted(seen, reverse=True)  # same time: newest id first


def test_retrieve_one(stored, api_key_for, tenant_a, client_for):
    _, events = stored
    some = next(iter(events.values()))
    for client in (api_key_for(tenant_a, role="viewer"), client_for("viewer")):
        response = client.get(f"{EVENTS_URL}/{some.pk}")
        assert response.status_code == 200
        assert response.json()["id"] == some.pk
        assert response.json()["correlation_id"] == some.correlation_id
    assert api_key_for(tenant_a).get(f"{EVENTS_URL}/999999999").status_code == 404
    assert api_key_for(tenant_a).get(f"{EVENTS_URL}/abc").status_code == 404


def test_every_get_counts_as_a_query(stored, api_key_for, tenant_a):
    _, events = stored
    some = next(iter(events))
    client = api_key_for(tenant_a)

    def count(query_type):
        labels = {"tenant_id": label(tenant_a), "query_type": query_type}
        return (
            sample("traversion_queries_total", labels),
            sample("traversion_query_duration_seconds_count", labels),
        )

    before = {t: count(t) for t in ("list", "retrieve", "root_cause")}
    client.get(EVENTS_URL)
    client.get(f"{EVENTS_URL}?service_id=api")
    client.get(f"{EVENTS_URL}/{some}")
    client.get(f"{EVENTS_URL}/{some}/root-cause")
    after = {t: count(t) for t in before}
    assert after["list"][0] - before["list"][0] == 2
    assert after["list"][1] - before["list"][1] == 2
    assert after["retrieve"][0] - before["retrieve"][0] == 1
    assert after["root_cause"][0] - before["root_cause"][0] == 1
    assert after["root_cause"][1] - before["root_cause"][1] == 1


def test_root_cause_of_an_event_without_causes_is_itself(stored, api_key_for, tenant_a):
    _, events = stored
    some = next(iter(events))
    body = api_key_for(tenant_a).get(f"{EVENTS_URL}/{some}/root-cause").json()
    assert body["root_cause"]["id"] == body["event"]["id"] == some
    assert body["chain_length"] == 0 and body["confidence"] == 1.0
    assert body["candidates"] == []
    assert [step["event"]["id"] for step in body["chain"]] == [some]


def test_paths_have_no_trailing_slash(stored, api_key_for, tenant_a):
    assert api_key_for(tenant_a).get(f"{EVENTS_URL}/").status_code == 404


@pytest.mark.parametrize(
    ("since", "status"),
    [
        ("2020-01-01T00:00:00-20:09", 200),  # Python parses it, PostgreSQL would refuse it
        ("1067-08-03T20:55:24-20:09", 200),
        ("0001-01-01T00:00:00+05:00", 400),  # before year 1 once in UTC
    ],
)
def test_odd_offsets_are_normalised_not_500(stored, api_key_for, tenant_a, since, status):
    response = api_key_for(tenant_a).get(EVENTS_URL, {"since": since})
    assert response.status_code == status, response.content
    if status == 200:
        assert len(response.json()["results"]) == 10
