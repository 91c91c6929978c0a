"""Gauges computed at scrape time.

An app declares a scrape-time gauge with `@scrape_gauge(...)` in its own `metrics.py`
(imported from its AppConfig.ready()). The function returns an iterable of
`(label_values_tuple, value)`. Database-backed gauges (`cached=True`) are computed at
most once per METRICS_COLLECTION_INTERVAL ms, so a scrape never runs a heavy query per
tenant per family; cheap ones (`cached=False`) are read fresh at every scrape.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

Samples = Iterable[tuple[tuple[str, ...], float]]
T = TypeVar("T")


@dataclass
class ScrapeGauge:
    name: str
    documentation: str
    labels: tuple[str, ...]
    compute: Callable[[], Samples]
    cached: bool
    _samples: list = field(default_factory=list)
    _computed_at: float = float("-inf")

    def samples(self, now: float) -> list:
        max_age = settings.METRICS_COLLECTION_INTERVAL / 1000 if self.cached else 0
        if now - self._computed_at >= max_age or not self.cached:
            try:
                self._samples = [
                    (tuple(str(v) for v in labels), float(value))
                    for labels, value in self.compute()
                ]
            except Exception:  # a failing source must not break the whole scrape
                logger.exception("scrape gauge %s failed", self.name)
            self._computed_at = now
        return self._samples

    def family(self, now: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))
        for labels, value in self.samples(now):
            family.add_metric(list(labels), value)
        return family


REGISTRY: dict[str, ScrapeGauge] = {}
_lock = threading.Lock()


def scrape_gauge(name: str, documentation: str, labels: Iterable[str] = (), *, cached: bool = True):
    """Register the decorated function as the source of gauge `name`."""

    def decorator(func: Callable[[], Samples]) -> Callable[[], Samples]:
        REGISTRY[name] = ScrapeGauge(name, documentation, tuple(labels), func, cached)
        return func

    return decorator


def interval_cached(func: Callable[[], T]) -> Callable[[], T]:
    """Cache a source several gauges share for METRICS_COLLECTION_INTERVAL ms.

    Two families computed from one query (active and idle connections, sessions by
    tenant and by role) then cost one query per interval, not one each.
    """
    state: dict[str, object] = {"at": float("-inf"), "value": None}
    lock = threading.Lock()

    @functools.wraps(func)
    def wrapper() -> T:
        with lock:
            now = time.monotonic()
            if now - state["at"] >= settings.METRICS_COLLECTION_INTERVAL / 1000:
                state["value"] = func()
                state["at"] = now
            return state["value"]

    wrapper.cache_clear = lambda: state.update(at=float("-inf"))  # type: ignore[attr-defined]
    return wrapper


class ScrapeGaugeCollector(Collector):
    """Yields every registered scrape-time gauge (add it to the registry /metrics renders)."""

    def collect(self):
        now = time.monotonic()
        with _lock:  # two concurrent scrapes share one computation
            families = [gauge.family(now) for gauge in REGISTRY.values()]
        yield from families

    def describe(self):
        return []
