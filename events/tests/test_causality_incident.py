"""The scripted incident: deploy -> errors -> alert on checkout, noise on search, and a
second tenant with its own incident at the same times.

Events are posted through the API; the engine runs as the Celery task would (the plain
function on the batch's ids).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F

from events.causality.outbox import process_batch
from events.models import CausalityBatch, CausalLink, CausalPattern, Event

from .conftest import label, other_tenant_incident, sample, scripted_incident

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(tenant_a, tenant_b, api_key_for, post_events, t0):
    """Post both tenants' events (beta first, interleaved in time) and run the engine."""
    ids = {}
    for tenant, events in (
        (tenant_b, other_tenant_incident(t0)),
        (tenant_a, scripted_incident(t0)),
    ):
        response = post_events(api_key_for(tenant), events)
        assert response.status_code == 201, response.content
        ids[tenant.slug] = response.json()["ids"]
    results = [process_batch(batch.pk) for batch in CausalityBatch.objects.order_by("pk")]
    assert not CausalityBatch.objects.exists()
    return ids, results


def by_index(ids: list[int]) -> dict[int, Event]:
    events = Event.objects.in_bulk(ids)
    return {index: events[pk] for index, pk in enumerate(ids)}


def test_root_cause_of_the_alert_is_the_deploy(incident, tenant_a, api_key_for):
    ids, _ = incident
    alpha = by_index(ids["alpha"])
    deploy, alert = alpha[3], alpha[14]
    assert (deploy.event_type, alert.event_type) == ("deploy", "alert")

    response = api_key_for(tenant_a).get(f"/api/v1/events/{alert.pk}/root-cause")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["event"]["id"] == alert.pk
    assert body["root_cause"]["id"] == deploy.pk
    # The deploy is the most likely root: it heads the ranking, strictly ahead of any other.
    confidences = [c["confidence"] for c in body["candidates"]]
    assert body["candidates"][0]["event"]["id"] == deploy.pk
    assert confidences == sorted(confidences, reverse=True)
    assert all(c < confidences[0] for c in confidences[1:])
    # The older config change is a candidate root too, ranked below the deploy.
    others = [c["event"]["event_type"] for c in body["candidates"][1:]]
    assert "config_change" in others
    assert body["confidence"] == pytest.approx(confidences[0])
    # deploy -> (error or exception on checkout) -> alert, confidences multiplied along it.
    chain = body["chain"]
    assert chain[0]["event"]["id"] == deploy.pk
    assert chain[-1]["event"]["id"] == alert.pk
    assert len(chain) == body["chain_length"] + 1 == 3
    assert chain[1]["event"]["event_type"] in ("error", "exception")
    assert chain[1]["event"]["service_id"] == "checkout"
    assert [s["causality_type"] for s in chain] == [None, "deployment", "alert_trigger"]
    assert body["confidence"] == pytest.approx(chain[1]["confidence"] * chain[2]["confidence"])
    assert 0.5 < body["confidence"] < 1
    assert body["truncated"] is False


def test_every_checkout_error_is_linked_to_the_deploy(incident):
    ids, _ = incident
    alpha = by_index(ids["alpha"])
    deploy = alpha[3]
    for index in (5, 6, 8, 9, 11, 12):
        link = CausalLink.objects.get(cause=deploy, effect=alpha[index])
        assert link.causality_type == "deployment"
        # The deploy is each error's most confident cause.
        best = CausalLink.objects.filter(effect=alpha[index]).order_by("-confidence").first()
        assert best.cause_id == deploy.pk
    # Closer in time, more confident.
    first = CausalLink.objects.get(cause=deploy, effect=alpha[5]).confidence
    last = CausalLink.objects.get(cause=deploy, effect=alpha[12]).confidence
    assert first > last


def test_noise_on_another_service_is_not_linked(incident):
    ids, _ = incident
    alpha = by_index(ids["alpha"])
    search = [e.pk for e in alpha.values() if e.service_id == "search"]
    assert not CausalLink.objects.filter(cause_id__in=search).exists()
    assert not CausalLink.objects.filter(effect_id__in=search).exists()


def test_no_link_crosses_tenants(incident, tenant_b, api_key_for):
    ids, _ = incident
    assert CausalLink.objects.filter(tenant__slug="alpha").exists()
    assert CausalLink.objects.filter(tenant__slug="beta").exists()
    crossing = CausalLink.objects.exclude(cause__tenant=F("tenant")) | CausalLink.objects.exclude(
        effect__tenant=F("tenant")
    )
    assert not crossing.exists()
    for link in CausalLink.objects.filter(tenant__slug="alpha"):
        assert link.cause_id in ids["alpha"] and link.effect_id in ids["alpha"]
    # Beta's alert goes back to beta's own deploy.
    beta = by_index(ids["beta"])
    body = api_key_for(tenant_b).get(f"/api/v1/events/{beta[3].pk}/root-cause").json()
    assert body["root_cause"]["id"] == beta[0].pk
    assert {c["event"]["id"] for c in body["candidates"]} <= set(ids["beta"])


def test_a_recurring_cause_becomes_a_pattern_once(incident, tenant_a, api_key_for, post_events, t0):
    detected = CausalPattern.objects.filter(tenant__slug="alpha", detected_at__isnull=False)
    deploy_error = detected.get(cause_type="deploy", effect_type="error", service_id="checkout")
    assert deploy_error.causality_type == "deployment"
    assert deploy_error.occurrences == 5  # the five errors after the deploy
    # error -> alert: linked, but fewer than 5 times: counted, not a pattern yet.
    error_alert = CausalPattern.objects.get(
        tenant__slug="alpha", cause_type="error", effect_type="alert", service_id="checkout"
    )
    assert 0 < error_alert.occurrences < 5 and error_alert.detected_at is None
    before = {
        kind: sample(
            "traversion_patterns_detected_total",
            {"tenant_id": label(tenant_a), "pattern_type": kind},
        )
        for kind in ("deployment", "alert_trigger")
    }
    already = set(detected.values_list("pk", flat=True))

    # The same story again, a minute later: within the window, counts add up.
    response = post_events(api_key_for(tenant_a), scripted_incident(t0 + timedelta(minutes=1)))
    assert response.status_code == 201
    process_batch(CausalityBatch.objects.get().pk)
    deploy_error.refresh_from_db()
    # Every deploy -> error link on checkout counts (the new errors follow both deploys).
    assert (
        deploy_error.occurrences
        == CausalLink.objects.filter(
            tenant__slug="alpha",
            cause__event_type="deploy",
            effect__event_type="error",
            effect__service_id="checkout",
        ).count()
        > 10
    )
    new = detected.exclude(pk__in=already)
    after = {
        kind: sample(
            "traversion_patterns_detected_total",
            {"tenant_id": label(tenant_a), "pattern_type": kind},
        )
        for kind in before
    }
    # The deploy pattern is not counted again; error -> alert now reaches 5 and is new.
    assert (
        after["deployment"] - before["deployment"]
        == new.filter(causality_type="deployment").count()
        == 0
    )
    assert new.filter(cause_type="error", effect_type="alert").exists()
    assert (
        after["alert_trigger"] - before["alert_trigger"]
        == new.filter(causality_type="alert_trigger").count()
        >= 1
    )


def test_reprocessing_a_batch_adds_no_link(incident):
    from events.causality.engine import process_events

    ids, _ = incident
    links = CausalLink.objects.count()
    result = process_events(ids["alpha"])
    assert result.links == []
    assert CausalLink.objects.count() == links


def test_engine_chains_agree_with_the_root_cause_walk(incident, tenant_a, tenant_b):
    """The chain the engine keeps for each linked event is the one the API walk finds."""
    from events.causality.rootcause import root_causes
    from events.models import EventChain

    ids, results = incident
    chains = {c.event_id: c for c in EventChain.objects.all()}
    linked = {k: v for r in results for k, v in r.chain_lengths.items()}
    assert set(chains) == set(linked) == set(CausalLink.objects.values_list("effect_id", flat=True))
    for tenant in (tenant_a, tenant_b):
        found = root_causes(tenant.pk, [pk for pk in ids[tenant.slug] if pk in chains])
        for event_id, walk in found.items():
            chain = chains[event_id]
            assert (chain.root_id, chain.length) == (walk.root_id, walk.chain_length)
            assert chain.confidence == pytest.approx(walk.confidence)
            assert linked[event_id] == walk.chain_length
