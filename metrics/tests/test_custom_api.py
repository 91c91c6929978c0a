"""The guide's custom-metrics API: catalogue families only, exact label sets."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from metrics.custom import (
    LabelSetError,
    UnknownMetricError,
    increment_counter,
    observe_histogram,
    set_gauge,
)


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_counter_by_mapping_and_by_list():
    labels = {"tenant_id": "7", "event_type": "deploy", "service_id": "api"}
    before = value("traversion_events_total", **labels)
    increment_counter("traversion_events_total", labels)
    increment_counter("traversion_events_total", ["7", "deploy", "api"], value=2.5)
    assert value("traversion_events_total", **labels) - before == 3.5


def test_counter_without_total_suffix_and_without_labels():
    before = value("traversion_jwt_issued_total")
    increment_counter("traversion_jwt_issued")
    assert value("traversion_jwt_issued_total") - before == 1


def test_gauge_and_histogram():
    set_gauge("traversion_websocket_connections", {"tenant_id": "7"}, 12)
    assert value("traversion_websocket_connections", tenant_id="7") == 12
    before = value("traversion_query_duration_seconds_count", tenant_id="7", query_type="search")
    observe_histogram("traversion_query_duration_seconds", ["7", "search"], 0.042)
    after = value("traversion_query_duration_seconds_count", tenant_id="7", query_type="search")
    assert after - before == 1
    bucket = value(
        "traversion_query_duration_seconds_bucket", tenant_id="7", query_type="search", le="0.05"
    )
    assert bucket >= 1


def test_unknown_name_is_a_clear_key_error():
    with pytest.raises(UnknownMetricError) as error:
        increment_counter("custom_events_total", ["tenant1", "custom"])
    assert isinstance(error.value, KeyError)
    assert str(error.value) == (
        "unknown metric 'custom_events_total': define it in metrics/catalogue.py first"
    )


def test_wrong_type_is_refused():
    with pytest.raises(UnknownMetricError, match="is a counter, not a gauge"):
        set_gauge("traversion_events_total", ["1", "a", "b"], 3)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"tenant_id": "1"}, r"labels \['tenant_id'\] given, expected exactly"),
        ({"tenant_id": "1", "event_type": "a", "service": "b"}, "expected exactly"),
        (["1", "a"], "2 label values given, expected 3 \\(tenant_id, event_type, service_id\\)"),
        ("1,a,b", "labels must be a mapping or a list"),
        (None, "0 label values given, expected 3"),
    ],
)
def test_wrong_label_set_is_a_clear_value_error(labels, message):
    before = sum(
        s.value
        for f in REGISTRY.collect()
        if f.name == "traversion_events"
        for s in f.samples
        if s.name == "traversion_events_total"
    )
    with pytest.raises(LabelSetError, match=message) as error:
        increment_counter("traversion_events_total", labels)
    assert isinstance(error.value, ValueError)
    after = sum(
        s.value
        for f in REGISTRY.collect()
        if f.name == "traversion_events"
        for s in f.samples
        if s.name == "traversion_events_total"
    )
    assert after == before


def test_counters_only_go_up():
    with pytest.raises(ValueError, match="only goes up"):
        increment_counter("traversion_jwt_issued_total", value=-1)
