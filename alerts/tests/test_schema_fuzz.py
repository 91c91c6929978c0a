"""The OpenAPI schema: generated cleanly, and the API it describes survives fuzzing.

schemathesis loads /api/schema/ from the WSGI application in-process, generates requests
for every operation from it (valid and invalid bodies, parameters, ids), sends them as
a tenant owner (JWT) and fails on any 5xx.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from alerts.choices import InstanceState
from alerts.models import AlertEvent, AlertInstance, Silence, fingerprint_of

from .apihelpers import make_channel, make_rule

#: Examples per operation; with the API's operations this is well over MIN_CASES.
EXAMPLES_PER_OPERATION = 20
MIN_CASES = 500
MY_VIEWS = (
    "AlertRuleViewSet",
    "AlertInstanceViewSet",
    "AlertEventViewSet",
    "NotificationViewSet",
    "SilenceViewSet",
    "NotificationChannelViewSet",
    "AlertTestView",
    "AlertmanagerV2AlertsView",
    "AlertmanagerWebhookView",
)


@pytest.mark.django_db
def test_schema_generates_without_warnings_for_the_alerting_api(client_for):
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    messages = list(GENERATOR_STATS._warn_cache) + list(GENERATOR_STATS._error_cache)
    mine = [m for m in messages if "alerts/" in m or any(view in m for view in MY_VIEWS)]
    assert mine == []
    assert not [m for m in messages if "enum naming encountered" in m]
    for path in (
        "/api/v1/rules/",
        "/api/v1/rules/{id}/toggle/",
        "/api/v1/instances/{id}/acknowledge/",
        "/api/v1/history/",
        "/api/v1/notifications/{id}/resend/",
        "/api/v1/silences/{id}/expire/",
        "/api/v1/channels/{id}/test/",
        "/api/internal/alerts/test",
        "/api/v2/alerts",
        "/webhook/alerts",
    ):
        assert path in schema["paths"], path
    served = client_for("owner").get("/api/schema/?format=json")
    assert served.status_code == 200 and served.json()["paths"].keys() == schema["paths"].keys()
    docs = client_for("owner").get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


@pytest.fixture
def seeded(tenant_a, tenant_b, users):
    """Rows of both tenants, so that ids the fuzzer finds lead somewhere."""
    for tenant, suffix in ((tenant_a, "a"), (tenant_b, "b")):
        channel = make_channel(tenant, f"slack-{suffix}")
        rule = make_rule(tenant, f"rule-{suffix}", channels=[channel])
        instance = AlertInstance.objects.create(
            rule=rule,
            tenant=tenant,
            fingerprint=fingerprint_of(rule.pk, {}),
            state=InstanceState.FIRING,
        )
        AlertEvent.objects.create(
            rule=rule, instance=instance, tenant=tenant, to_state=InstanceState.FIRING
        )
        Silence.objects.create(
            tenant=tenant,
            matchers=[{"name": "a", "op": "=", "value": "b"}],
            ends_at=timezone.now() + timedelta(hours=1),
        )


@pytest.mark.django_db
def test_fuzzing_the_api_finds_no_server_error(seeded, users, settings_for_fuzz):
    token = str(AccessToken.for_user(users["owner"]))
    headers = {"Authorization": f"Bearer {token}"}
    app = get_wsgi_application()
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", app, headers=headers)
    cases = 0
    statuses: Counter[int] = Counter()
    unauthorized: set[str] = set()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25

    def fuzz(operation):
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case):
            nonlocal cases
            cases += 1
            # One savepoint per request: a database error in one view (a 500) must not
            # poison the test's transaction for every request after it.
            savepoint = transaction.savepoint()
            response = case.call(headers=headers)
            if response.status_code >= 500:
                transaction.savepoint_rollback(savepoint)
            else:
                transaction.savepoint_commit(savepoint)
            statuses[response.status_code] += 1
            if response.status_code == 401:
                unauthorized.add(operation.label)
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except FailureGroup as exc:
                failures.append(f"{operation.label}: {exc}"[:2000])

        run()

    for operation in operations:
        fuzz(operation)
    assert failures == []
    assert cases >= MIN_CASES
    # The requests got through authentication and reached the views: plenty succeed.
    successes = sum(n for status, n in statuses.items() if 200 <= status < 300)
    assert successes >= 100, statuses
    # Only the token endpoints refuse (bad passwords, bad refresh tokens).
    assert unauthorized <= {"POST /api/v1/auth/token/", "POST /api/v1/auth/token/refresh/"}
    print(f"schemathesis: {cases} cases over {len(operations)} operations, no 5xx: {statuses}")


@pytest.fixture
def settings_for_fuzz(settings):
    """The WSGI app called in-process, inside the test's transaction.

    Django closes "old" connections when a request starts and ends, which would close
    the test's connection in the middle of its transaction; the test client turns that
    off for its requests, and so does this fixture for schemathesis's.
    """
    from django.core import signals
    from django.db import close_old_connections

    settings.DEBUG_PROPAGATE_EXCEPTIONS = False  # a 5xx must be a response, not a raise
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield settings
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
