"""Metric deltas after ingesting the scripted incident and running the engine on it."""

from __future__ import annotations

from collections import Counter

import pytest

from events.causality.outbox import process_batch
from events.models import CausalityBatch, CausalLink, CausalPattern

from .conftest import label, other_tenant_incident, sample, scripted_incident

pytestmark = pytest.mark.django_db

LINK_TYPES = ("deployment", "configuration", "error_propagation", "alert_trigger", "correlation")


def snapshot(tenants, services=("checkout", "search")) -> dict:
    """Every sample the incident can move; keys name tenants by slug."""
    values = {}
    for tenant_obj in tenants:
        tenant, tenant_id = tenant_obj.slug, label(tenant_obj)
        for service in services:
            for event_type in (
                "deploy",
                "config_change",
                "error",
                "exception",
                "alert",
                "log",
                "metric",
            ):
                labels = {"tenant_id": tenant_id, "event_type": event_type, "service_id": service}
                values[("events", tenant, event_type, service)] = sample(
                    "traversion_events_total", labels
                )
            for link_type in LINK_TYPES:
                labels = {
                    "tenant_id": tenant_id,
                    "causality_type": link_type,
                    "service_id": service,
                }
                values[("detections", tenant, link_type, service)] = sample(
                    "traversion_causality_detections_total", labels
                )
        for link_type in LINK_TYPES:
            values[("patterns", tenant, link_type)] = sample(
                "traversion_patterns_detected_total",
                {"tenant_id": tenant_id, "pattern_type": link_type},
            )
    for family in (
        "traversion_causality_confidence",
        "traversion_causality_chain_length",
        "traversion_causality_detection_duration_seconds",
        "traversion_root_cause_analysis_duration_seconds",
    ):
        for suffix in ("_count", "_sum"):
            values[family + suffix] = sample(family + suffix)
    values["confidence_le_0.5"] = sample("traversion_causality_confidence_bucket", {"le": "0.5"})
    return values


def test_incident_metric_deltas(tenant_a, tenant_b, api_key_for, post_events, t0):
    before = snapshot((tenant_a, tenant_b))
    alpha_events, beta_events = scripted_incident(t0), other_tenant_incident(t0)
    assert post_events(api_key_for(tenant_a), alpha_events).status_code == 201
    assert post_events(api_key_for(tenant_b), beta_events).status_code == 201
    results = [process_batch(batch.pk) for batch in CausalityBatch.objects.order_by("pk")]
    after = snapshot((tenant_a, tenant_b))
    delta = {key: after[key] - before[key] for key in before}

    # events_total by tenant, type and service: exactly what was posted.
    posted = Counter(("alpha", e["event_type"], e["service_id"]) for e in alpha_events)
    posted += Counter(("beta", e["event_type"], e["service_id"]) for e in beta_events)
    for (_, tenant, event_type, service), value in (
        (key, value) for key, value in delta.items() if key[0] == "events"
    ):
        assert value == posted[(tenant, event_type, service)], (tenant, event_type, service)
    assert delta[("events", "alpha", "error", "checkout")] == 5
    assert delta[("events", "alpha", "deploy", "checkout")] == 1
    assert delta[("events", "alpha", "error", "search")] == 1

    # causality detections by tenant, causality type and effect service = the stored links.
    links = CausalLink.objects.select_related("effect", "tenant")
    stored = Counter(
        (link.tenant.slug, link.causality_type, link.effect.service_id) for link in links
    )
    for (_, tenant, link_type, service), value in (
        (key, value) for key, value in delta.items() if key[0] == "detections"
    ):
        assert value == stored[(tenant, link_type, service)], (tenant, link_type, service)
    assert delta[("detections", "alpha", "deployment", "checkout")] >= 6
    assert delta[("detections", "alpha", "alert_trigger", "checkout")] >= 1
    assert sum(v for k, v in delta.items() if k[0] == "detections" and k[3] == "search") == 0

    # One confidence observation per link, with the links' confidences.
    assert delta["traversion_causality_confidence_count"] == links.count()
    assert delta["traversion_causality_confidence_sum"] == pytest.approx(
        sum(link.confidence for link in links)
    )
    assert delta["confidence_le_0.5"] == sum(1 for link in links if link.confidence <= 0.5)

    # One chain-length observation per linked event: errors are 1 link from the deploy
    # (or the config change), each alert 2 links.
    linked_effects = {link.effect_id for link in links}
    chain_lengths = {k: v for r in results for k, v in r.chain_lengths.items()}
    assert set(chain_lengths) == linked_effects
    assert delta["traversion_causality_chain_length_count"] == len(linked_effects)
    assert delta["traversion_causality_chain_length_sum"] == sum(chain_lengths.values())
    assert sorted(chain_lengths.values()).count(2) == 2  # the two alerts
    assert delta["traversion_root_cause_analysis_duration_seconds_count"] == len(linked_effects)
    # Detection time is observed for every event processed, linked or not.
    assert delta["traversion_causality_detection_duration_seconds_count"] == len(
        alpha_events
    ) + len(beta_events)

    # Patterns: deploy -> error on checkout (5 links within the window) is new, once;
    # the counter matches the pattern rows, per tenant and type.
    patterns = Counter(
        (p.tenant.slug, p.causality_type)
        for p in CausalPattern.objects.filter(detected_at__isnull=False).select_related("tenant")
    )
    assert patterns[("alpha", "deployment")] == 1
    for (_, tenant, link_type), value in (
        (key, value) for key, value in delta.items() if key[0] == "patterns"
    ):
        assert value == patterns[(tenant, link_type)], (tenant, link_type)
    assert delta[("patterns", "beta", "deployment")] == 0  # two errors only: no pattern
