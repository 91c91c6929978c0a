"""The datasource contract: what a rule's query is checked and evaluated by.

A datasource is a small class behind two methods:

- `validate(query, global_rule=None)` refuses a query at save time by raising
  `QueryError` whose message says why ("unknown table requests; allowed: ...").
- `evaluate(rule)` runs the query and returns one `Sample` per row or series, or raises
  `QueryError` when no verdict can be reached (unreachable server, timeout, bad query).
  The engine turns that into the rule's `error` health: an error is a state, never an
  empty "everything is fine" result.

`evaluate_many(rules)` evaluates several rules of one tenant together; datasources that
can share work between rules (one read-only transaction for every SQL rule of a tenant)
override it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from alerts.models import AlertRule

#: A label name as Prometheus and Alertmanager accept it.
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Longest label value kept (a label is an identity, not a payload).
MAX_LABEL_VALUE = 256


class QueryError(Exception):
    """A query was refused (at save time) or failed (at evaluation); the message says why."""


@dataclass(frozen=True)
class Sample:
    """One row or series of a result: its labels, its value and the tenant it concerns.

    `value` is None when the row has no numeric value (the condition is then false,
    unless the rule fires on every row). `tenant_id` matters for global rules: the
    instance it creates belongs to (and routes to) that tenant.
    """

    labels: dict = field(default_factory=dict)
    value: float | None = None
    tenant_id: int | None = None


def clean_value(raw) -> float | None:
    """A numeric value as float; None for NULL, NaN, booleans and non-numbers."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def clean_label_name(name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", str(name)) or "_"
    return name if LABEL_NAME.match(name) else f"_{name}"


def label_value(raw) -> str:
    """A label's value as text ("" for NULL; empty values are dropped by the callers)."""
    if raw is None:
        return ""
    value = raw.isoformat() if hasattr(raw, "isoformat") else str(raw)
    return value[:MAX_LABEL_VALUE]


def clean_labels(pairs: Iterable[tuple[str, object]]) -> dict[str, str]:
    """Label names made valid, values made strings; empty values dropped (Alertmanager)."""
    labels = {}
    for name, raw in pairs:
        value = label_value(raw)
        if value:
            labels[clean_label_name(name)] = value
    return labels


@dataclass
class Result:
    """What evaluating one rule gave: its samples, or the error that stopped it."""

    samples: list[Sample] | None = None
    error: QueryError | None = None
    #: Time spent querying the datasource for this rule.
    seconds: float = 0.0


class Datasource:
    """Base class of every datasource (see the module docstring for the contract)."""

    #: The registry key, also the value stored in AlertRule.datasource.
    name: ClassVar[str] = ""
    #: Whether the engine polls it on the rule's interval (external alerts are pushed).
    polled: ClassVar[bool] = True
    #: Whether a rule needs a query at all.
    requires_query: ClassVar[bool] = True

    def validate(self, query: str, *, global_rule: bool | None = None) -> None:
        """Raise QueryError saying why `query` cannot be used (None: the rule's scope is
        not known yet, so only the checks that do not depend on it run)."""
        raise NotImplementedError

    def evaluate(self, rule: AlertRule) -> list[Sample]:
        raise NotImplementedError

    def evaluate_many(self, rules: Sequence[AlertRule]) -> dict[int, Result]:
        """Evaluate several rules; each gets its samples or the QueryError it raised."""
        results: dict[int, Result] = {}
        for rule in rules:
            started = time.perf_counter()
            try:
                results[rule.pk] = Result(samples=self.evaluate(rule))
            except QueryError as exc:
                results[rule.pk] = Result(error=exc)
            results[rule.pk].seconds = time.perf_counter() - started
        return results
