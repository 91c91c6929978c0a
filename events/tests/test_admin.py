"""The events admin is read-only and shows a tenant's staff only their tenant's rows."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from events.ingest import ingest
from events.models import Event

pytestmark = pytest.mark.django_db


def test_admin_lists_only_the_staff_users_tenant(tenant_a, tenant_b, users, client):
    now = timezone.now()
    ingest(
        tenant_a,
        {"service_id": "alpha-svc", "event_type": "log", "timestamp": now.isoformat()},
        enqueue=lambda _: None,
    )
    ingest(
        tenant_b,
        {"service_id": "beta-svc", "event_type": "log", "timestamp": now.isoformat()},
        enqueue=lambda _: None,
    )
    owner = users["owner"]
    owner.is_staff = True
    owner.save()
    owner.user_permissions.add(Permission.objects.get(codename="view_event"))
    client.force_login(owner)
    page = client.get("/admin/events/event/")
    assert page.status_code == 200
    assert b"alpha-svc" in page.content and b"beta-svc" not in page.content
    foreign = Event.objects.get(tenant=tenant_b)
    assert client.get(f"/admin/events/event/{foreign.pk}/change/").status_code in (302, 404)
    # Read-only: no add, change or delete, even for an operator.
    client.force_login(users["operator"])
    assert client.get("/admin/events/event/add/").status_code == 403
    own = Event.objects.get(tenant=tenant_a)
    assert client.post(f"/admin/events/event/{own.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Event.objects.count() == 2
