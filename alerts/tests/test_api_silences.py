"""Silences through the API: matchers validated, expiring, listing by state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.choices import AuditAction
from alerts.models import Silence
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


def later(**delta) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


def test_create_with_both_matcher_shapes(client_for, tenant_a):
    response = client_for("member").post(
        "/api/v1/silences/",
        {
            "matchers": [
                {"name": "alertname", "op": "=", "value": "traversion_api_down"},
                # Alertmanager's own shape, as in the guide's alert-storm call.
                {"name": "service", "value": "api|web", "isRegex": True},
                {"name": "env", "value": "dev", "isRegex": False, "isEqual": False},
            ],
            "ends_at": later(hours=2),
            "comment": "deploy",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    silence = Silence.objects.get()
    assert silence.tenant == tenant_a and silence.created_by.username == "member"
    assert silence.matchers == [
        {"name": "alertname", "op": "=", "value": "traversion_api_down"},
        {"name": "service", "op": "=~", "value": "api|web"},
        {"name": "env", "op": "!=", "value": "dev"},
    ]
    assert response.json()["state"] == "active"
    assert AuditEvent.objects.filter(action=AuditAction.SILENCE_CREATED, tenant=tenant_a).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"matchers": [], "ends_at": later(hours=1)}, "matchers"),
        ({"matchers": "alertname=x", "ends_at": later(hours=1)}, "matchers"),
        ({"matchers": [{"name": "bad name", "value": "x"}], "ends_at": later(hours=1)}, "matchers"),
        (
            {"matchers": [{"name": "a", "op": "~=", "value": "x"}], "ends_at": later(hours=1)},
            "matchers",
        ),
        (
            {"matchers": [{"name": "a", "op": "=~", "value": "("}], "ends_at": later(hours=1)},
            "matchers",
        ),
        ({"matchers": [{"name": "a", "value": 5}], "ends_at": later(hours=1)}, "matchers"),
        ({"matchers": [{"name": "a", "value": "x"}]}, "ends_at"),
        ({"matchers": [{"name": "a", "value": "x"}], "ends_at": later(hours=-1)}, "ends_at"),
        (
            {
                "matchers": [{"name": "a", "value": "x"}],
                "starts_at": later(hours=3),
                "ends_at": later(hours=2),
            },
            "ends_at",
        ),
        ({"matchers": [{"name": "a", "value": "x"}], "ends_at": "soon"}, "ends_at"),
    ],
)
def test_invalid_silences_are_400(client_for, tenant_a, body, field):
    response = client_for("member").post("/api/v1/silences/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Silence.objects.exists()


def test_expire_and_states(client_for, tenant_a):
    client = client_for("member")
    active = client.post(
        "/api/v1/silences/",
        {"matchers": [{"name": "a", "value": "x"}], "ends_at": later(hours=1)},
        format="json",
    ).json()
    pending = client.post(
        "/api/v1/silences/",
        {
            "matchers": [{"name": "a", "value": "y"}],
            "starts_at": later(hours=1),
            "ends_at": later(hours=2),
        },
        format="json",
    ).json()
    assert pending["state"] == "pending"
    expired = client.post(f"/api/v1/silences/{active['id']}/expire", format="json")
    assert expired.status_code == 200, expired.content
    assert expired.json()["state"] == "expired"
    assert Silence.objects.get(pk=active["id"]).ends_at <= timezone.now()
    states = {
        state: [s["id"] for s in client.get(f"/api/v1/silences/?state={state}").json()["results"]]
        for state in ("active", "pending", "expired")
    }
    assert states == {"active": [], "pending": [pending["id"]], "expired": [active["id"]]}
    assert AuditEvent.objects.filter(action=AuditAction.SILENCE_EXPIRED).count() == 1
    # Silences end by expiring; they are not deleted.
    assert client.delete(f"/api/v1/silences/{pending['id']}/").status_code == 405


def test_update_comment_and_extend(client_for, tenant_a):
    client = client_for("member")
    created = client.post(
        "/api/v1/silences/",
        {"matchers": [{"name": "a", "value": "x"}], "ends_at": later(hours=1)},
        format="json",
    ).json()
    new_end = later(hours=5)
    response = client.patch(
        f"/api/v1/silences/{created['id']}/",
        {"comment": "longer", "ends_at": new_end},
        format="json",
    )
    assert response.status_code == 200, response.content
    silence = Silence.objects.get()
    assert silence.comment == "longer" and silence.ends_at > timezone.now() + timedelta(hours=4)
