"""traversion_auth_failures_by_ip_total: the top N offenders by name, the rest as `other`."""

from __future__ import annotations

import pytest

from metrics.security import FailingIpRanking, ranking
from tenants import audit

from .helpers import changes, snapshot

pytestmark = pytest.mark.django_db

NAME = "traversion_auth_failures_by_ip_total"


def fail_from(ip: str, times: int = 1) -> None:
    for _ in range(times):
        audit.record("auth.login", actor="someone", method="jwt", result="failure", ip_address=ip)


def by_ip(moved) -> dict[str, float]:
    return {dict(labels)["ip_address"]: v for (name, labels), v in moved.items() if name == NAME}


@pytest.fixture
def top_two(settings):
    settings.METRICS_AUTH_FAILURE_IPS = 2
    settings.METRICS_COLLECTION_INTERVAL = 0
    ranking.forget()
    yield settings
    ranking.forget()


def test_only_the_top_offenders_are_named(top_two):
    before = snapshot()
    fail_from("198.51.100.1", 3)
    fail_from("198.51.100.2", 2)
    fail_from("198.51.100.3", 1)  # third address: folded into `other`
    fail_from("2001:db8::7", 1)  # so is a fourth
    assert by_ip(changes(before, snapshot())) == {
        "198.51.100.1": 3,
        "198.51.100.2": 2,
        "other": 2,
    }


def test_successes_and_unknown_addresses_are_not_named(top_two):
    before = snapshot()
    audit.record("auth.login", method="jwt", result="success", ip_address="198.51.100.9")
    audit.record("auth.login", method="jwt", result="failure")  # no address known
    assert by_ip(changes(before, snapshot())) == {"other": 1}


def test_every_process_names_the_same_addresses(top_two):
    """Two processes (two rankings) read the same audit log and agree on the top N."""
    fail_from("203.0.113.5", 4)
    fail_from("203.0.113.6", 3)
    fail_from("203.0.113.7", 1)
    first, second = FailingIpRanking(), FailingIpRanking()
    labels = ["203.0.113.5", "203.0.113.6", "203.0.113.7"]
    assert [first.label_for(ip) for ip in labels] == [second.label_for(ip) for ip in labels]
    assert [first.label_for(ip) for ip in labels] == ["203.0.113.5", "203.0.113.6", "other"]


def test_ranking_is_reread_once_per_interval(top_two, django_assert_num_queries):
    top_two.METRICS_COLLECTION_INTERVAL = 3_600_000
    fresh = FailingIpRanking()
    with django_assert_num_queries(1):
        fresh.label_for("192.0.2.1")
        fresh.label_for("192.0.2.2")
        fresh.label_for("192.0.2.3")


def test_the_named_set_never_exceeds_n_and_the_sum_is_exact(top_two):
    before = snapshot()
    expected_total = 0
    for i in range(12):
        fail_from(f"192.0.2.{i % 6}", 1 + i % 3)
        expected_total += 1 + i % 3
        assert len(ranking.top_offenders(2)) <= 2
        assert len(ranking._named) <= 2
    moved = by_ip(changes(before, snapshot()))
    assert sum(moved.values()) == expected_total
    assert "other" in moved
