"""What a scrape renders.

- Single process (tests, `manage.py runserver`): the default prometheus_client registry,
  i.e. the catalogue, django-prometheus and the process collectors.
- Multiprocess (PROMETHEUS_MULTIPROC_DIR set, as under gunicorn and Celery prefork):
  every process writes its samples to files in that directory and the scrape merges
  them, so a counter is the sum over all workers, alive or gone, whichever worker
  answers. The web `/metrics` renders counters and histograms incrementally
  (metrics/multiprocess_text.py) and the rest with prometheus_client's
  MultiProcessCollector; a Celery worker's port uses MultiProcessCollector alone.

The web `/metrics` adds the scrape-time gauges (metrics.collectors), computed once per
scrape in the answering process; a Celery worker's port serves only the process part.
"""

from __future__ import annotations

import os
from functools import lru_cache

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from . import buffered
from .collectors import ScrapeGaugeCollector
from .multiprocess_text import FAST_TYPES, MultiProcessTextRenderer


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _RegistryCollector(Collector):
    """Everything another registry holds, as one collector."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self):
        return self._registry.collect()

    def describe(self):
        return []


@lru_cache(maxsize=1)
def process_registry() -> CollectorRegistry:
    """Samples recorded by the processes: merged from files in multiprocess mode."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_RegistryCollector(REGISTRY))
    return registry


@lru_cache(maxsize=1)
def scrape_registry() -> CollectorRegistry:
    """Single process: the default registry plus the scrape-time gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RegistryCollector(process_registry()))
    registry.register(ScrapeGaugeCollector())
    return registry


class _OtherFilesCollector(Collector):
    """Multiprocess gauges and summaries, merged by prometheus_client (their merge
    depends on each gauge's mode; they are few)."""

    def __init__(self, path: str):
        self._path = path

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [
            os.path.join(self._path, name)
            for name in os.listdir(self._path)
            if name.endswith(".db") and name.split("_", 1)[0] not in FAST_TYPES
        ]
        return MultiProcessCollector.merge(files, accumulate=True)

    def describe(self):
        return []


@lru_cache(maxsize=1)
def _multiprocess_parts() -> tuple[MultiProcessTextRenderer, CollectorRegistry]:
    path = multiprocess_dir()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OtherFilesCollector(path))
    registry.register(ScrapeGaugeCollector())
    return MultiProcessTextRenderer(path), registry


def render_metrics() -> bytes:
    """The body of the web `/metrics`.

    Multiprocess: counters and histograms from the incremental renderer
    (metrics/multiprocess_text.py), then gauges, summaries and scrape-time gauges.
    """
    if not multiprocess_dir():
        return generate_latest(scrape_registry())
    buffered.flush()  # this process's own counts are never behind
    renderer, others = _multiprocess_parts()
    return renderer.render().encode() + generate_latest(others)
