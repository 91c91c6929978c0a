"""Registry snapshots and /metrics parsing for the metrics tests."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: object) -> Key:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


def snapshot() -> dict[Key, float]:
    """Every traversion_* counter and histogram count of the in-process registry."""
    values: dict[Key, float] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("traversion_"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count")):
                values[key(sample.name, **sample.labels)] = sample.value
    return values


def changes(before: dict[Key, float], after: dict[Key, float]) -> dict[Key, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) != 0}


def parse(body: str) -> dict[str, object]:
    """/metrics text -> {family name: Metric} (counters keyed with their `_total`)."""
    families = {}
    for family in text_string_to_metric_families(body):
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = family
    return families


def sample_sums(family, sample_name: str, **match: str) -> float:
    return sum(
        s.value
        for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in match.items())
    )


def by_label(family, sample_name: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for s in family.samples:
        if s.name == sample_name:
            totals[s.labels[label]] += s.value
    return dict(totals)
