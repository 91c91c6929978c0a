"""Root-cause analysis: walk the causal links back from an event to its most likely root.

The links form a DAG (a cause is always earlier than its effect). A path's confidence is
the product of its links' confidences; the most likely root is the root (an event with no
stored cause) reached by the most confident path. A best-first search (Dijkstra on
products, which only shrink along a path) pops roots in decreasing order of path
confidence: the first root popped is the answer, the following ones rank the others.

The graph is loaded lazily: a search asks for an event's causes only when it is about to
expand that event, so the cost follows the paths actually explored, not the whole
ancestry. Several searches advance in lockstep, each round loading the causes all of
them need in one query. The API walks here; the engine keeps each linked event's chain
incrementally instead (engine._chains), by the same criterion.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection

from ..models import CausalLink
from .scoring import DEFAULT_PARAMS

#: Ids per `effect_id IN (...)` query.
QUERY_CHUNK = 5_000
#: Rounds of loading after which the remaining searches stop (their best node so far is
#: reported as a truncated root). A guard against pathological graphs only.
MAX_ROUNDS = 200


@dataclass(frozen=True)
class Hop:
    """One link of a chain: `cause_id` -> `effect_id`."""

    link_id: int
    cause_id: int
    effect_id: int
    causality_type: str
    confidence: float


@dataclass
class RootCause:
    """The answer for one event: its most likely root and the chain from there to it."""

    event_id: int
    root_id: int
    confidence: float
    hops: list[Hop]
    truncated: bool = False
    #: Every root found, (root id, path confidence, links), most likely first.
    candidates: list[tuple[int, float, int]] = field(default_factory=list)

    @property
    def chain_length(self) -> int:
        return len(self.hops)


class _Search:
    """Best-first search back from one event."""

    def __init__(self, event_id: int, rank_all: bool, max_depth: int):
        self.event_id = event_id
        self.rank_all = rank_all
        self.max_depth = max_depth
        self.best = {event_id: 1.0}
        self.depth = {event_id: 0}
        self.toward: dict[int, Hop] = {}  # node -> the link from it towards event_id
        self.heap = [(-1.0, event_id)]
        self.done: set[int] = set()
        self.roots: list[tuple[int, float, bool]] = []  # (node, confidence, truncated)

    def advance(self, incoming: dict[int, list[Hop]]) -> set[int]:
        """Search until the answer is known (returns no ids) or causes must be loaded."""
        while self.heap:
            negative, node = self.heap[0]
            if node in self.done:
                heapq.heappop(self.heap)
                continue
            at_limit = self.depth[node] >= self.max_depth
            if node not in incoming and not at_limit:
                if not self.rank_all:
                    # The next node only: its causes may already settle the answer.
                    return {node}
                # Ranking explores everything: load the whole frontier at once.
                return {
                    n
                    for _, n in self.heap
                    if n not in incoming and n not in self.done and self.depth[n] < self.max_depth
                }
            heapq.heappop(self.heap)
            self.done.add(node)
            hops = [] if at_limit else incoming[node]
            if not hops:
                self.roots.append((node, -negative, at_limit))
                if not self.rank_all:
                    return set()
                continue
            for hop in hops:
                confidence = -negative * hop.confidence
                if confidence > self.best.get(hop.cause_id, 0.0):
                    self.best[hop.cause_id] = confidence
                    self.depth[hop.cause_id] = self.depth[node] + 1
                    self.toward[hop.cause_id] = hop
                    heapq.heappush(self.heap, (-confidence, hop.cause_id))
        return set()

    def stop(self) -> None:
        """Give up: the most likely event reached so far stands as a truncated root."""
        reached = [node for node in self.done if node != self.event_id]
        if not self.roots and reached:
            node = max(reached, key=lambda n: (self.best[n], -n))
            self.roots.append((node, self.best[node], True))

    def result(self) -> RootCause:
        if not self.roots or self.roots[0][0] == self.event_id:
            return RootCause(self.event_id, self.event_id, 1.0, [])
        chains = [
            (root, conf, truncated, self._chain(root)) for root, conf, truncated in self.roots
        ]
        root, confidence, truncated, hops = chains[0]
        return RootCause(
            self.event_id,
            root,
            confidence,
            hops,
            truncated=truncated,
            candidates=[(r, c, len(h)) for r, c, _, h in chains],
        )

    def _chain(self, root: int) -> list[Hop]:
        hops, node = [], root
        while node in self.toward:
            hop = self.toward[node]
            hops.append(hop)
            node = hop.effect_id
        return hops


def root_causes(
    tenant_id: int,
    event_ids: Iterable[int],
    *,
    rank_all: bool = False,
    max_depth: int | None = None,
) -> dict[int, RootCause]:
    """The most likely root of each event (with `rank_all`, every root ranked)."""
    max_depth = DEFAULT_PARAMS.root_cause_max_depth if max_depth is None else max_depth
    incoming: dict[int, list[Hop]] = {}
    searches = [_Search(event_id, rank_all, max_depth) for event_id in dict.fromkeys(event_ids)]
    pending = searches
    for _ in range(MAX_ROUNDS):
        needed: set[int] = set()
        still = []
        for search in pending:
            wanted = search.advance(incoming)
            if wanted:
                needed |= wanted
                still.append(search)
        pending = still
        if not needed:
            break
        _load(tenant_id, needed, incoming)
    for search in pending:
        search.stop()
    return {search.event_id: search.result() for search in searches}


# One index lookup per effect, whatever the planner's statistics say. Without them (a
# table that grew faster than ANALYZE ran) `effect_id IN (...)` is planned as a scan of
# the whole link table. OFFSET 0 keeps the LATERAL subquery from being flattened into a
# join, so it runs per effect, on the effect index.
_LOAD_SQL = """
SELECT l.tenant_id, l.id, l.cause_id, l.effect_id, l.causality_type, l.confidence
FROM unnest(%s::bigint[]) AS k(effect_id)
CROSS JOIN LATERAL (
    SELECT tenant_id, id, cause_id, effect_id, causality_type, confidence
    FROM {table} WHERE effect_id = k.effect_id OFFSET 0
) AS l
"""


def _load(tenant_id: int, event_ids: set[int], incoming: dict[int, list[Hop]]) -> None:
    """Fetch the causes of `event_ids` (one query per QUERY_CHUNK ids)."""
    ordered = sorted(event_ids)
    for event_id in ordered:
        incoming[event_id] = []
    for start in range(0, len(ordered), QUERY_CHUNK):
        chunk = ordered[start : start + QUERY_CHUNK]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(_LOAD_SQL.format(table=CausalLink._meta.db_table), [chunk])
                rows = cursor.fetchall()
        else:
            rows = CausalLink.objects.filter(effect_id__in=chunk).values_list(
                "tenant_id", "id", "cause_id", "effect_id", "causality_type", "confidence"
            )
        # Links never cross tenants (the engine only pairs events of one tenant); the
        # check keeps the walk inside the tenant even so.
        for link_tenant, link_id, cause_id, effect_id, causality_type, confidence in rows:
            if link_tenant == tenant_id:
                incoming[effect_id].append(
                    Hop(link_id, cause_id, effect_id, causality_type, confidence)
                )
