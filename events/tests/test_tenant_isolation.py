"""Tenant A's credentials never read tenant B's events; a guessed id is 404 and audited."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tenants.choices import AuditAction
from tenants.models import AuditEvent

from .conftest import EVENTS_URL, event

pytestmark = pytest.mark.django_db


@pytest.fixture
def both(tenant_a, tenant_b, api_key_for, post_events):
    now = timezone.now()
    a = post_events(api_key_for(tenant_a), [event("shared-name", "error", now)] * 3)
    b = post_events(api_key_for(tenant_b), [event("shared-name", "error", now)] * 2)
    assert a.status_code == b.status_code == 201
    return a.json()["ids"], b.json()["ids"]


def cross_tenant_events():
    return AuditEvent.objects.filter(action=AuditAction.CROSS_TENANT)


def test_lists_show_only_own_events(both, tenant_a, tenant_b, api_key_for, client_for):
    a_ids, b_ids = both
    for client, expected in (
        (api_key_for(tenant_a), a_ids),
        (client_for("viewer"), a_ids),
        (api_key_for(tenant_b), b_ids),
        (client_for("member_b"), b_ids),
    ):
        for query in ("", "?service_id=shared-name", "?event_type=error&limit=1000"):
            response = client.get(EVENTS_URL + query)
            assert response.status_code == 200
            assert sorted(r["id"] for r in response.json()["results"]) == sorted(expected)


@pytest.mark.parametrize("suffix", ["", "/root-cause"])
def test_foreign_event_is_404_and_recorded(both, tenant_a, api_key_for, client_for, suffix):
    _, b_ids = both
    for client in (api_key_for(tenant_a), client_for("owner")):
        response = client.get(f"{EVENTS_URL}/{b_ids[0]}{suffix}")
        assert response.status_code == 404
        assert b"shared-name" not in response.content
    events = list(cross_tenant_events().order_by("pk"))
    assert len(events) == 2
    assert all(e.tenant == tenant_a for e in events)
    assert all(e.details["object_id"] == str(b_ids[0]) for e in events)
    assert events[0].actor.startswith("api-key:") and events[1].actor == "owner"
    # A missing id is a plain 404, not an attack.
    assert api_key_for(tenant_a).get(f"{EVENTS_URL}/99999999{suffix}").status_code == 404
    assert cross_tenant_events().count() == 2


def test_api_key_cannot_pick_another_tenant(both, tenant_a, api_key_for):
    response = api_key_for(tenant_a).get(EVENTS_URL, HTTP_X_TENANT="beta")
    assert response.status_code == 404
    assert cross_tenant_events().count() == 1


def test_outsider_and_anonymous(both, client_for, api_client):
    assert client_for("outsider").get(EVENTS_URL).status_code == 403
    assert api_client.get(EVENTS_URL).status_code == 401


def test_posting_never_lands_in_another_tenant(both, tenant_a, api_key_for, post_events):
    """An X-Tenant header naming B on A's key is refused, never stored into B."""
    from events.models import Event

    response = post_events(
        api_key_for(tenant_a), {"service_id": "x", "event_type": "log"}, HTTP_X_TENANT="beta"
    )
    assert response.status_code == 404
    assert Event.objects.filter(tenant__slug="beta").count() == 2
