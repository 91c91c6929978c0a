"""Linking new events to their likely causes, a batch at a time.

`process_events(ids)` is the engine's entry point (the Celery task is a thin wrapper):

1. load the batch; keep the events that can be effects (their type has a prior as an
   effect, or they carry a correlation id);
2. fetch candidate causes for the whole batch in one statement: per (service, cause
   type) and per correlation id, the most recent events before the batch's end within
   the horizon (one LATERAL index scan per key);
3. score every (candidate, effect) pair in memory (scoring.score), keep the K most
   confident causes above θ for each effect, store the new links;
4. settle each linked event's most likely root from its causes' (chain length), update
   the pattern detector, and feed the metrics.

Events of different tenants never meet: every query is bound to one tenant.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from metrics.catalogue import (
    CAUSALITY_CHAIN_LENGTH,
    CAUSALITY_CONFIDENCE,
    CAUSALITY_DETECTION_DURATION,
    CAUSALITY_DETECTIONS,
    ROOT_CAUSE_ANALYSIS_DURATION,
)
from metrics.labels import tenant_label
from tenants.models import Tenant

from ..models import CausalLink, Event, EventChain, EventUsage
from .patterns import LinkKey, detect_patterns
from .scoring import (
    CAUSE_TYPES,
    DEFAULT_PARAMS,
    CausalityParams,
    evidence,
    proximity,
    reach_seconds,
    score,
)

logger = logging.getLogger(__name__)

ROW_FIELDS = ("id", "timestamp", "service_id", "event_type", "correlation_id")


class Row(NamedTuple):
    id: int
    ts: float  # epoch seconds
    service_id: str
    event_type: str
    correlation_id: str

    @property
    def order(self) -> tuple[float, int]:
        # Ties in time are broken by id (arrival order), so links always form a DAG.
        return (self.ts, self.id)


class NewLink(NamedTuple):
    cause_id: int
    effect_id: int
    causality_type: str
    confidence: float


@dataclass
class EngineResult:
    processed: int = 0
    links: list[NewLink] = field(default_factory=list)
    chain_lengths: dict[int, int] = field(default_factory=dict)
    patterns: list = field(default_factory=list)


def _row(values: tuple) -> Row:
    event_id, timestamp, service_id, event_type, correlation_id = values
    ts = timestamp if isinstance(timestamp, float) else timestamp.timestamp()
    return Row(event_id, ts, service_id, event_type, correlation_id)


def _datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def process_events(
    event_ids: Iterable[int], params: CausalityParams = DEFAULT_PARAMS
) -> EngineResult:
    """Find and store the causes of the given (already stored) events."""
    started = time.perf_counter()
    by_tenant: dict[int, list[Row]] = defaultdict(list)
    for values in Event.objects.filter(pk__in=list(event_ids)).values_list(
        "tenant_id", *ROW_FIELDS
    ):
        by_tenant[values[0]].append(_row(values[1:]))
    result = EngineResult()
    for tenant_id, rows in by_tenant.items():
        _process_tenant(tenant_id, rows, params, result)
        result.processed += len(rows)
    if result.processed:
        per_event = (time.perf_counter() - started) / result.processed
        for _ in range(result.processed):
            CAUSALITY_DETECTION_DURATION.observe(per_event)
    return result


def _process_tenant(
    tenant_id: int, rows: list[Row], params: CausalityParams, result: EngineResult
) -> None:
    effects = sorted(
        (row for row in rows if row.event_type in CAUSE_TYPES or row.correlation_id),
        key=lambda row: row.order,
    )
    if not effects:
        return
    scored: dict[int, list[tuple[float, str, Row]]] = {}
    for cluster in _clusters(effects, params.horizon_seconds):
        candidates = _Candidates(_fetch_candidates(tenant_id, cluster, params))
        for effect in cluster:
            causes = candidates.score(effect, params)
            if causes:
                scored[effect.id] = causes
    if not scored:
        return
    label = tenant_label(Tenant.objects.get(pk=tenant_id))
    effect_rows = {row.id: row for row in effects}
    links = _store_links(tenant_id, scored, effect_rows)
    if not links:
        return
    for link, _, effect in links:
        CAUSALITY_DETECTIONS.labels(label, link.causality_type, effect.service_id).inc()
        CAUSALITY_CONFIDENCE.observe(link.confidence)
    result.links.extend(link for link, _, _ in links)

    # Root cause of each linked event, one step from its causes' (dynamic programming
    # over the DAG, the walk's max-product criterion): chain length and its timing.
    walk_started = time.perf_counter()
    chains = _chains(scored, effect_rows)
    linked = sorted({effect.id for _, _, effect in links})
    for effect_id in linked:
        length = chains[effect_id][2]
        result.chain_lengths[effect_id] = length
        CAUSALITY_CHAIN_LENGTH.observe(length)
    per_walk = (time.perf_counter() - walk_started) / len(linked)
    for _ in linked:
        ROOT_CAUSE_ANALYSIS_DURATION.observe(per_walk)

    keys = [
        LinkKey(
            cause.event_type,
            effect.event_type,
            effect.service_id,
            link.causality_type,
            _datetime(effect.ts),
        )
        for link, cause, effect in links
    ]
    result.patterns.extend(detect_patterns(tenant_id, label, keys, params))


def _chains(
    scored: dict[int, list[tuple[float, str, Row]]], effect_rows: dict[int, Row]
) -> dict[int, tuple[int, float, int]]:
    """(root id, path confidence, links) of every linked effect; stored as EventChain.

    An effect's best chain is its best cause's chain plus the link to it. Causes outside
    the batch bring theirs from EventChain (a cause never linked is its own root); causes
    inside it are earlier in (time, id) order, so they are settled first.
    """
    outside = {cause.id for causes in scored.values() for _, _, cause in causes} - set(scored)
    known: dict[int, tuple[int, float, int]] = {
        event_id: (root_id, confidence, length)
        for event_id, root_id, confidence, length in EventChain.objects.filter(
            event_id__in=sorted(outside)
        ).values_list("event_id", "root_id", "confidence", "length")
    }
    for effect_id in sorted(scored, key=lambda pk: (effect_rows[pk].ts, pk)):
        best = None
        for confidence, _, cause in scored[effect_id]:
            root_id, cause_confidence, length = known.get(cause.id, (cause.id, 1.0, 0))
            value = confidence * cause_confidence
            if best is None or value > best[1]:
                best = (root_id, value, length + 1)
        known[effect_id] = best
    chains = {effect_id: known[effect_id] for effect_id in scored}
    EventChain.objects.bulk_create(
        [
            EventChain(event_id=pk, root_id=root_id, confidence=confidence, length=length)
            for pk, (root_id, confidence, length) in chains.items()
        ],
        ignore_conflicts=True,
    )
    return chains


def _clusters(effects: list[Row], horizon: float) -> list[list[Row]]:
    """Split time-sorted effects where a gap exceeds the horizon (their candidates differ)."""
    clusters = [[effects[0]]]
    for row in effects[1:]:
        if row.ts - clusters[-1][-1].ts > horizon:
            clusters.append([row])
        else:
            clusters[-1].append(row)
    return clusters


def _fetch_candidates(tenant_id: int, cluster: list[Row], params: CausalityParams) -> list[Row]:
    """Earlier events that could cause the cluster's effects, in one statement.

    Per (service, cause type) and per correlation id, the most recent events up to the
    cluster's last effect, each an index range scan. The limit grows with the cluster's
    own effects on that service (or with that correlation id), so that the first effect of
    a burst still sees its own M predecessors.
    """
    lo = _datetime(cluster[0].ts - params.horizon_seconds)
    hi = _datetime(cluster[-1].ts)
    per_service: dict[str, int] = defaultdict(int)
    per_correlation: dict[str, int] = defaultdict(int)
    keys: set[tuple[str, str]] = set()
    for effect in cluster:
        per_service[effect.service_id] += 1
        if effect.correlation_id:
            per_correlation[effect.correlation_id] += 1
        for cause_type in CAUSE_TYPES.get(effect.event_type, ()):
            keys.add((effect.service_id, cause_type))
    limit = params.candidates_per_key
    typed = [(svc, ctype, limit + per_service[svc]) for svc, ctype in sorted(keys)]
    correlated = [(corr, limit + count) for corr, count in sorted(per_correlation.items())]
    if connection.vendor == "postgresql":
        found = _candidates_lateral(tenant_id, lo, hi, typed, correlated)
    else:  # SQLite (the embedded default, low volume): one small query per key
        base = (
            Event.objects.filter(tenant_id=tenant_id, timestamp__gte=lo, timestamp__lte=hi)
            .order_by("-timestamp", "-id")
            .values_list(*ROW_FIELDS)
        )
        found = [
            values
            for queryset in [
                *(base.filter(service_id=s, event_type=t)[:n] for s, t, n in typed),
                *(base.filter(correlation_id=c)[:n] for c, n in correlated),
            ]
            for values in queryset
        ]
    rows: dict[int, Row] = {}
    for values in found:
        rows.setdefault(values[0], _row(values))
    return list(rows.values())


_COLUMNS = "id, timestamp, service_id, event_type, correlation_id"
# Epoch seconds come back as a float: parsing thousands of timestamps is not free.
_OUTER = (
    "e.id, EXTRACT(EPOCH FROM e.timestamp)::float8, e.service_id, e.event_type, e.correlation_id"
)
# One LATERAL index scan per key; the keys travel as arrays, so the statement's size and
# planning cost do not grow with the number of keys.
_LATERAL_SQL = f"""
SELECT {_OUTER}
FROM unnest(%s::varchar[], %s::varchar[], %s::int[]) AS k(service_id, event_type, n)
CROSS JOIN LATERAL (
    SELECT {_COLUMNS} FROM {{table}}
    WHERE tenant_id = %s AND service_id = k.service_id AND event_type = k.event_type
      AND timestamp >= %s AND timestamp <= %s
    ORDER BY timestamp DESC, id DESC LIMIT k.n
) AS e
UNION ALL
SELECT {_OUTER}
FROM unnest(%s::varchar[], %s::int[]) AS k(correlation_id, n)
CROSS JOIN LATERAL (
    SELECT {_COLUMNS} FROM {{table}}
    WHERE tenant_id = %s AND correlation_id = k.correlation_id AND correlation_id <> ''
      AND timestamp >= %s AND timestamp <= %s
    ORDER BY timestamp DESC, id DESC LIMIT k.n
) AS e
"""


def _candidates_lateral(tenant_id, lo, hi, typed, correlated) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            _LATERAL_SQL.format(table=Event._meta.db_table),
            [
                [s for s, _, _ in typed],
                [t for _, t, _ in typed],
                [n for _, _, n in typed],
                tenant_id,
                lo,
                hi,
                [c for c, _ in correlated],
                [n for _, n in correlated],
                tenant_id,
                lo,
                hi,
            ],
        )
        return cursor.fetchall()


class _Candidates:
    """Candidate causes indexed by (service, type) and by correlation id, in time order."""

    def __init__(self, rows: list[Row]):
        rows.sort(key=lambda row: (row.ts, row.id))
        self.by_key: dict[tuple[str, str], list[Row]] = defaultdict(list)
        self.by_correlation: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            self.by_key[(row.service_id, row.event_type)].append(row)
            if row.correlation_id:
                self.by_correlation[row.correlation_id].append(row)
        self.orders = {
            key: [(row.ts, row.id) for row in lst]
            for key, lst in (*self.by_key.items(), *self.by_correlation.items())
        }

    def score(self, effect: Row, params: CausalityParams) -> list[tuple[float, str, Row]]:
        """The K most confident causes of `effect` above theta: [(confidence, type, cause)]."""
        best: dict[int, tuple[float, str, Row]] = {}
        correlation = effect.correlation_id

        def consider(cause: Row, confidence: float, causality_type: str) -> None:
            if confidence >= params.min_confidence and confidence > best.get(cause.id, (0.0,))[0]:
                best[cause.id] = (min(confidence, 1.0), causality_type, cause)

        # Same service, a cause type with a prior: the evidence is fixed per list, so the
        # scan stops at the first candidate too old to reach theta even if correlated.
        for cause_type in CAUSE_TYPES.get(effect.event_type, ()):
            key = (effect.service_id, cause_type)
            plain, causality_type = evidence(cause_type, effect.event_type, True, False, params)
            strong = evidence(cause_type, effect.event_type, True, True, params)[0]
            reach = reach_seconds(strong if correlation else plain, params)
            for cause in self._recent(key, effect, params.candidates_per_key):
                delta = effect.ts - cause.ts
                if delta > reach:
                    break
                correlated = bool(correlation) and cause.correlation_id == correlation
                strength = strong if correlated else plain
                consider(cause, proximity(delta, params) * strength, causality_type)
        # Any service and type sharing the correlation id.
        if correlation:
            for cause in self._recent(correlation, effect, params.candidates_per_key):
                delta = effect.ts - cause.ts
                if delta > params.horizon_seconds:
                    break
                confidence, causality_type = score(
                    cause.event_type,
                    effect.event_type,
                    delta,
                    cause.service_id == effect.service_id,
                    True,
                    params,
                )
                consider(cause, confidence, causality_type)
        ranked = sorted(best.values(), key=lambda item: (-item[0], -item[2].ts, -item[2].id))
        return ranked[: params.max_causes_per_event]

    def _recent(self, key, effect: Row, limit: int):
        """Up to `limit` candidates of `key` strictly before `effect`, newest first."""
        candidates = self.by_correlation.get(key) if isinstance(key, str) else self.by_key.get(key)
        if not candidates:
            return
        end = bisect.bisect_left(self.orders[key], effect.order)
        for index in range(end - 1, max(end - 1 - limit, -1), -1):
            yield candidates[index]


def _store_links(
    tenant_id: int,
    scored: dict[int, list[tuple[float, str, Row]]],
    effect_rows: dict[int, Row],
) -> list[tuple[NewLink, Row, Row]]:
    """Insert the links; returns the ones really inserted (a re-run adds nothing twice)."""
    now = timezone.now()
    proposed = {
        (cause.id, effect_id): (
            NewLink(cause.id, effect_id, causality_type, round(confidence, 6)),
            cause,
            effect_rows[effect_id],
        )
        for effect_id, causes in scored.items()
        for confidence, causality_type, cause in causes
    }
    links = [link for link, _, _ in proposed.values()]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            inserted = _insert_links_returning(tenant_id, links, now)
        else:
            existing = set(
                CausalLink.objects.filter(
                    tenant_id=tenant_id, effect_id__in=list(scored)
                ).values_list("cause_id", "effect_id")
            )
            CausalLink.objects.bulk_create(
                [
                    CausalLink(tenant_id=tenant_id, detected_at=now, **link._asdict())
                    for link in links
                ],
                ignore_conflicts=True,
            )
            inserted = set(proposed) - existing
        if inserted:
            EventUsage.objects.filter(tenant_id=tenant_id).update(
                links_count=F("links_count") + len(inserted)
            )
    return [value for key, value in proposed.items() if key in inserted]


# One statement for the whole batch; ON CONFLICT skips links a previous run stored, and
# RETURNING says which ones are new, so the metrics count each link once.
_INSERT_LINKS_SQL = """
INSERT INTO {table} (tenant_id, cause_id, effect_id, causality_type, confidence, detected_at)
SELECT %s, u.cause_id, u.effect_id, u.causality_type, u.confidence, %s
FROM unnest(%s::bigint[], %s::bigint[], %s::varchar[], %s::float8[])
    AS u(cause_id, effect_id, causality_type, confidence)
ON CONFLICT (cause_id, effect_id) DO NOTHING
RETURNING cause_id, effect_id
"""


def _insert_links_returning(tenant_id: int, links: list[NewLink], now) -> set[tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_LINKS_SQL.format(table=CausalLink._meta.db_table),
            [
                tenant_id,
                now,
                [link.cause_id for link in links],
                [link.effect_id for link in links],
                [link.causality_type for link in links],
                [link.confidence for link in links],
            ],
        )
        return set(cursor.fetchall())
