"""The events API in the OpenAPI schema matches what the ingest path accepts."""

from __future__ import annotations

import pytest

from events.ingest import EVENT_FIELDS, REQUIRED_FIELDS

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client_for):
    response = client_for("member").get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_paths_are_the_public_contract(schema):
    paths = schema["paths"]
    assert set(paths["/api/v1/events"]) == {"get", "post"}
    assert set(paths["/api/v1/events/{id}"]) == {"get"}
    assert set(paths["/api/v1/events/{id}/root-cause"]) == {"get"}
    assert not [p for p in paths if p.startswith("/api/v1/events/") and p.endswith("/")]


def test_ingest_request_is_one_event_or_a_list(schema):
    post = schema["paths"]["/api/v1/events"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    one_of = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["oneOf"]
    assert {"$ref": "#/components/schemas/EventIn"} in one_of
    assert {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}} in one_of
    event_in = schema["components"]["schemas"]["EventIn"]
    # The documented fields are exactly those the ingest validator accepts.
    assert set(event_in["properties"]) == set(EVENT_FIELDS)
    assert set(event_in["required"]) == set(REQUIRED_FIELDS)
    assert [p["name"] for p in post["parameters"]] == ["partial"]
    assert post["parameters"][0]["schema"]["type"] == "boolean"
    assert set(post["responses"]) == {"201", "400", "429"}
    quota = post["responses"]["429"]["content"]["application/json"]["schema"]["$ref"]
    assert quota.endswith("/QuotaExceeded")


def test_query_parameters_are_documented(schema):
    names = {p["name"] for p in schema["paths"]["/api/v1/events"]["get"]["parameters"]}
    assert {"since", "until", "service_id", "event_type", "severity", "cursor", "limit"} <= names
    root = schema["paths"]["/api/v1/events/{id}/root-cause"]["get"]["responses"]["200"]
    assert root["content"]["application/json"]["schema"]["$ref"].endswith("/RootCause")
