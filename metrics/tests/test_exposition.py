"""`/metrics` parses, serves every family with its declared labels, and stays bounded."""

from __future__ import annotations

import ipaddress
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from metrics.catalogue import FAMILIES
from metrics.custom import increment_counter, observe_histogram, set_gauge
from metrics.labels import OTHER_IP, UNMATCHED_ENDPOINT
from metrics.middleware import endpoint_from_route
from metrics.security import ranking
from tenants.models import ApiKey

from .design import DESIGN_FAMILIES, OWNED, registered_families
from .helpers import parse

pytestmark = pytest.mark.django_db

SUFFIX_LABELS = {"le", "quantile"}
LOOKS_LIKE_AN_ID = re.compile(r"^(\d{4,}|[0-9a-f]{8,}|[0-9a-f-]{36})$", re.IGNORECASE)


def route_endpoints() -> set[str]:
    """The `endpoint` value of every URL pattern of the project."""
    found = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                found.add(endpoint_from_route(route))

    # The project's patterns, and the failing view other tests of this run requested.
    walk(get_resolver("metrics.tests.urls").url_patterns, "")
    return found


def drive_traffic(client, users, tenant_a, tenant_b, api_key_for) -> list[str]:
    """Requests that put ids and free text in URLs; returns strings that must not leak."""
    client.post("/admin/login/", {"username": "operator", "password": "no"}, REMOTE_ADDR="10.9.8.7")
    client.post("/admin/login/", {"username": "operator", "password": "pw-operator"})
    member = Client()
    member.login(username="member", password="pw-member")
    owner_b = APIClient()
    owner_b.force_login(users["owner_b"])  # a session in tenant beta too
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(users['admin'])}")
    foreign, _ = ApiKey.issue(tenant_b, "secret-beta-key")
    machine = api_key_for(tenant_a, "admin")
    own_key = ApiKey.objects.filter(tenant=tenant_a).first()
    assert admin.get(f"/api/v1/api-keys/{foreign.pk}/").status_code == 404
    assert machine.get(f"/api/v1/api-keys/{own_key.pk}/").status_code == 200
    assert admin.get("/api/v1/tenants/alpha/").status_code == 200
    assert admin.get("/api/v1/tenants/alpha/?page=9182736").status_code == 200
    assert client.get("/no/such/page/77665544/").status_code == 404
    assert client.get("/api/v1/api-keys/99887766/?q=leak").status_code == 400  # no tenant chosen
    return ["no/such/page", "77665544", "99887766", "9182736", "?", "secret-beta-key"]


def fill_other_families(tenant) -> None:
    """Give each family nobody fed yet one sample, so its exported labels can be checked."""
    t = str(tenant.pk)
    for family, metric in FAMILIES.items():
        if not metric._labelnames or metric._metrics:
            continue  # already exported with real samples
        labels = [t if label == "tenant_id" else "x" for label in metric._labelnames]
        if metric._type == "counter":
            increment_counter(family, labels, 0)
        elif metric._type == "histogram":
            observe_histogram(family, labels, 0.01)
        else:
            set_gauge(family, labels, 0)


def test_every_registered_family_is_exposed_with_its_labels(
    client, settings, users, tenant_a, tenant_b, api_key_for
):
    settings.METRICS_COLLECTION_INTERVAL = 0
    ranking.forget()
    leaks = drive_traffic(client, users, tenant_a, tenant_b, api_key_for)
    fill_other_families(tenant_a)

    response = APIClient().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    body = response.content.decode()
    exposed = parse(body)
    registered = registered_families()

    # The families of the metrics area exist whoever else has shipped.
    assert OWNED <= set(registered), sorted(OWNED - set(registered))
    # Every DESIGN family that is registered is served, with its DESIGN labels.
    for name in set(DESIGN_FAMILIES) & set(registered):
        assert name in exposed, f"{name} is registered but not in /metrics"
        assert set(registered[name]) == set(DESIGN_FAMILIES[name]), name
        samples = exposed[name].samples
        # Another area's scrape-time gauge may have nothing to report in this database.
        assert samples or (name not in OWNED and name not in FAMILIES), f"{name}: no sample"
        for sample in samples:
            assert set(sample.labels) - SUFFIX_LABELS == set(DESIGN_FAMILIES[name]), (
                name,
                sample,
            )
    # Nothing in the traversion_ namespace that the catalogue does not know.
    assert {n for n in exposed if n.startswith("traversion_")} <= set(registered)

    # Label values are bounded: routes, known tenants, top IPs, no ids, no raw paths.
    endpoints = route_endpoints() | {UNMATCHED_ENDPOINT}
    for name, family in exposed.items():
        if not name.startswith("traversion_"):
            continue
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "endpoint":
                    assert value in endpoints, (name, value)
                elif label == "tenant_id":
                    # A tenant's primary key (tests before this one used other tenants).
                    assert value == "" or value.isdigit(), (name, value)
                elif label == "ip_address":
                    assert value == OTHER_IP or ipaddress.ip_address(value), (name, value)
                elif label != "le":
                    assert "/" not in value and not LOOKS_LIKE_AN_ID.match(value), (
                        name,
                        label,
                        value,
                    )
                for leak in leaks:
                    assert leak not in value, (name, label, value)

    http = exposed["traversion_http_requests_total"]
    seen = {s.labels["endpoint"] for s in http.samples}
    assert {"/api/v1/api-keys/<pk>/", "/api/v1/tenants/<slug>/", "unmatched"} <= seen
    sessions = {
        s.labels["tenant_id"]: s.value for s in exposed["traversion_active_sessions"].samples
    }
    assert sessions == {"": 1, str(tenant_a.pk): 1, str(tenant_b.pk): 1}
    roles = {
        (s.labels["tenant_id"], s.labels["role"]): s.value
        for s in exposed["traversion_user_sessions_by_role"].samples
    }
    assert roles == {
        ("", "none"): 1,
        (str(tenant_a.pk), "member"): 1,
        (str(tenant_b.pk), "owner"): 1,
    }


def test_bearer_token(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-tokeN")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-token").status_code == 401
    good = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert good.status_code == 200
    assert "traversion_http_requests_total" in good.content.decode()


def test_disabled_answers_404(client, settings):
    settings.ENABLE_METRICS = False
    assert client.get("/metrics").status_code == 404


def test_django_prometheus_families_are_fed(client, users, tenant_a, api_key_for):
    from metrics.middleware import HttpMetrics

    machine = api_key_for(tenant_a, "admin")
    assert machine.get("/api/v1/api-keys/").status_code == 200
    client.post("/admin/login/", {"username": "operator", "password": "nope"})
    exposed = parse(APIClient().get("/metrics").content.decode())
    view = "api-key-list"
    status_view = exposed["django_http_responses_total_by_status_view_method_total"]
    assert any(
        s.labels == {"status": "200", "view": view, "method": "GET"} and s.value >= 1
        for s in status_view.samples
    )
    latency = exposed["django_http_requests_latency_seconds_by_view_method"]
    assert any(s.labels.get("view") == view for s in latency.samples)
    assert any(s.value >= 1 for s in exposed["django_db_execute_total"].samples)
    assert any(s.value >= 1 for s in exposed["django_cache_get_total"].samples)
    # The families left out are not exported at all.
    for name in HttpMetrics.LEFT_OUT:
        assert name not in exposed and name + "_total" not in exposed, name


def test_database_families_come_from_one_wrapper():
    """django_db_* from metrics.backends and the execute wrapper; the duplicate histogram
    of django-prometheus is not exported."""
    from django.db import DatabaseError, connection, transaction

    from metrics.storage import observe_statement

    assert connection.settings_dict["ENGINE"].startswith("metrics.backends.")
    assert connection.execute_wrappers.count(observe_statement) == 1
    before = parse(APIClient().get("/metrics").content.decode())

    def total(exposed, name, **labels) -> float:
        family = exposed.get(name)
        if family is None:
            return 0.0
        return sum(
            s.value
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        with pytest.raises(DatabaseError), transaction.atomic():
            cursor.execute("SELECT * FROM no_such_table_here")
    after = parse(APIClient().get("/metrics").content.decode())
    labels = {"alias": "default", "vendor": connection.vendor}
    # The scrape itself runs statements too: at least the two of this test.
    executed = total(after, "django_db_execute_total", **labels) - total(
        before, "django_db_execute_total", **labels
    )
    assert executed >= 2
    errors = total(after, "django_db_errors_total", **labels) - total(
        before, "django_db_errors_total", **labels
    )
    assert errors == 1
    assert total(after, "django_db_new_connections_total", **labels) >= 1
    assert "django_db_query_duration_seconds" not in after
