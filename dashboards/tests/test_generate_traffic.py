"""generate_traffic's own behaviour; the traffic itself is exercised by test_e2e_prometheus."""

from __future__ import annotations

import socket

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from dashboards.traffic import Receivers, TrafficRun, expired_access_token, setup_fixtures
from tenants.models import ApiKey, Membership, Tenant


@pytest.mark.django_db
def test_setup_is_repeatable_and_rotates_keys():
    first = setup_fixtures()
    second = setup_fixtures()
    assert first.password != second.password
    assert first.member_key != second.member_key
    tenant_a = Tenant.objects.get(slug="traffic-a")
    tenant_b = Tenant.objects.get(slug="traffic-b")
    # One active key per name; the previous run's keys are revoked, not deleted.
    active = ApiKey.objects.for_tenant(tenant_a).active()
    assert sorted(active.values_list("name", flat=True)) == ["traffic-admin", "traffic-member"]
    assert ApiKey.objects.for_tenant(tenant_a).count() == 4
    assert ApiKey.authenticate(second.key_b).tenant == tenant_b
    roles = dict(Membership.objects.filter(tenant=tenant_a).values_list("user__username", "role"))
    assert roles == {"traffic-owner": "owner", "traffic-viewer": "viewer"}
    assert get_user_model().objects.get(username="traffic-owner").check_password(second.password)


@pytest.mark.django_db
def test_expired_token_is_rejected_as_expired():
    from rest_framework_simplejwt.exceptions import TokenError
    from rest_framework_simplejwt.tokens import AccessToken

    setup_fixtures()
    with pytest.raises(TokenError, match="expired"):
        AccessToken(expired_access_token("traffic-owner"))


def test_receivers_record_posts():
    receivers = Receivers()
    try:
        assert requests.post(f"{receivers.url}/slack/x", json={"a": 1}, timeout=5).text == "ok"
        assert (
            requests.post(f"{receivers.url}/pagerduty/v2/enqueue", json={}, timeout=5).status_code
            == 202
        )
        assert receivers.count() == 2 and receivers.count("/slack") == 1
        assert receivers.received[0] == ("/slack/x", {"a": 1})
    finally:
        receivers.close()


@pytest.mark.django_db
def test_unreachable_server_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CommandError, match=f"no Traversion server at http://127.0.0.1:{port}"):
        call_command("generate_traffic", "--base-url", f"http://127.0.0.1:{port}")


def test_budget_bounded():
    with pytest.raises(CommandError, match="between 10 and 175"):
        call_command("generate_traffic", "--budget", "600")


def test_wait_for_gives_up_at_its_limit():
    run = TrafficRun("http://127.0.0.1:9", budget_seconds=30, log=lambda line: None)
    assert run.wait_for("nothing", lambda: False, 1) is False
    assert run.report.problems == ["gave up waiting for nothing"]


def test_no_request_once_the_budget_is_spent():
    from dashboards.traffic import TrafficError

    run = TrafficRun("http://127.0.0.1:9", budget_seconds=0, log=lambda line: None)
    with pytest.raises(TrafficError, match="time budget exhausted before GET /healthz"):
        run.call("GET", "/healthz", "healthz")
