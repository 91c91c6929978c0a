"""Silence matchers with Alertmanager semantics.

A matcher is {"name": label, "op": "=" | "!=" | "=~" | "!~", "value": string}. Regular
expressions are anchored (fully match), and a missing label matches as the empty string,
as in Alertmanager. A silence applies when all of its matchers match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

from .choices import MatchOp

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def validate_matchers(matchers) -> list[dict]:
    """Return normalised matchers or raise ValidationError naming each bad one."""
    if not isinstance(matchers, list) or not matchers:
        raise ValidationError("matchers must be a non-empty list")
    errors, cleaned = [], []
    for index, matcher in enumerate(matchers):
        if not isinstance(matcher, dict):
            errors.append(f"matcher {index}: must be an object with name, op and value")
            continue
        name, value = matcher.get("name"), matcher.get("value")
        op = matcher.get("op")
        if op is None and "isRegex" in matcher:  # Alertmanager's own shape
            op = MatchOp.RE if matcher.get("isRegex") else MatchOp.EQ
            if matcher.get("isEqual") is False:
                op = MatchOp.NRE if op == MatchOp.RE else MatchOp.NE
        op = op or MatchOp.EQ
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            errors.append(f"matcher {index}: name {name!r} is not a valid label name")
            continue
        if op not in MatchOp.values:
            errors.append(f"matcher {index}: op {op!r} is not one of {', '.join(MatchOp.values)}")
            continue
        if not isinstance(value, str):
            errors.append(f"matcher {index}: value must be a string")
            continue
        if op in (MatchOp.RE, MatchOp.NRE):
            try:
                re.compile(value)
            except re.error as exc:
                errors.append(f"matcher {index}: invalid regular expression: {exc}")
                continue
        cleaned.append({"name": name, "op": op, "value": value})
    if errors:
        raise ValidationError(errors)
    return cleaned


def matcher_matches(matcher: dict, labels: dict) -> bool:
    actual = str(labels.get(matcher["name"], ""))
    op, value = matcher.get("op", MatchOp.EQ), matcher["value"]
    if op == MatchOp.EQ:
        return actual == value
    if op == MatchOp.NE:
        return actual != value
    matched = re.fullmatch(value, actual) is not None
    return matched if op == MatchOp.RE else not matched


def matches(matchers: Iterable[dict], labels: dict) -> bool:
    return all(matcher_matches(m, labels) for m in matchers)


def active_silences(tenant, at=None):
    from .models import Silence

    at = at or timezone.now()
    scope = (
        Q(tenant__isnull=True) | Q(tenant=tenant) if tenant is not None else Q(tenant__isnull=True)
    )
    return Silence.objects.filter(scope).active(at)


def silencing(tenant, labels: dict, at=None):
    """The first active silence (of the tenant or global) matching `labels`, or None."""
    for silence in active_silences(tenant, at):
        if matches(silence.matchers, labels):
            return silence
    return None
