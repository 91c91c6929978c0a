"""The monitoring guide's custom-metrics API, for code inside the monolith.

    from metrics.custom import increment_counter, set_gauge, observe_histogram

    increment_counter("traversion_events_total", {"tenant_id": "3", "event_type": "deploy",
                                                  "service_id": "api"})
    set_gauge("traversion_websocket_connections", ["3"], 12)
    observe_histogram("traversion_query_duration_seconds", ["3", "search"], 0.042)

Only families of the catalogue (metrics.catalogue) can be fed: a typo must fail loudly,
not create a new series nobody charts. Labels are a mapping of every declared label, or
a sequence in the declared order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .catalogue import FAMILIES

Labels = Mapping[str, object] | Sequence[object] | None


class UnknownMetricError(KeyError):
    """The name is not a family of the catalogue (or not of the expected type)."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class LabelSetError(ValueError):
    """The labels given are not exactly the family's declared labels."""


def _family(name: str, kind: str):
    metric = FAMILIES.get(name)
    if metric is None and kind == "counter":
        metric = FAMILIES.get(f"{name}_total")
    if metric is None:
        raise UnknownMetricError(
            f"unknown metric {name!r}: define it in metrics/catalogue.py first"
        )
    if metric._type != kind:
        raise UnknownMetricError(f"metric {name!r} is a {metric._type}, not a {kind}")
    return metric


def _child(name: str, metric, labels: Labels):
    declared = tuple(metric._labelnames)
    if labels is None:
        labels = ()
    if isinstance(labels, Mapping):
        given = tuple(labels)
        if set(given) != set(declared) or len(given) != len(declared):
            raise LabelSetError(
                f"{name}: labels {sorted(given)} given, expected exactly {list(declared)}"
            )
        values = tuple(str(labels[name]) for name in declared)
    elif isinstance(labels, str | bytes) or not isinstance(labels, Sequence):
        raise LabelSetError(
            f"{name}: labels must be a mapping or a list, not {type(labels).__name__}"
        )
    else:
        if len(labels) != len(declared):
            raise LabelSetError(
                f"{name}: {len(labels)} label values given, "
                f"expected {len(declared)} ({', '.join(declared) or 'none'})"
            )
        values = tuple(str(value) for value in labels)
    return metric.labels(*values) if declared else metric


def increment_counter(name: str, labels: Labels = None, value: float = 1) -> None:
    """Add `value` (>= 0) to a catalogue counter."""
    if value < 0:
        raise ValueError(f"{name}: a counter only goes up (got {value})")
    _child(name, _family(name, "counter"), labels).inc(value)


def set_gauge(name: str, labels: Labels, value: float) -> None:
    """Set a catalogue gauge (one updated by code, not a scrape-time gauge)."""
    _child(name, _family(name, "gauge"), labels).set(value)


def observe_histogram(name: str, labels: Labels, value: float) -> None:
    """Record one observation in a catalogue histogram."""
    _child(name, _family(name, "histogram"), labels).observe(value)
