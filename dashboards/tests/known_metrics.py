"""The metric names a dashboard or rule may reference: what the app and its exporters emit."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

# Sample names each metric type exposes, from its family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}

# Series Prometheus itself attaches to every scrape target.
PROMETHEUS_SYNTHETIC = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
)

# Exporter metrics a panel or rule may use, by exporter (docker-compose runs each one).
EXPORTER_METRICS = {
    "postgres-exporter": frozenset({"pg_up", "pg_stat_database_numbackends"}),
    "redis-exporter": frozenset({"redis_up", "redis_connected_clients", "redis_memory_used_bytes"}),
    "node-exporter": frozenset(
        {
            "node_filesystem_avail_bytes",
            "node_filesystem_size_bytes",
            "node_memory_MemAvailable_bytes",
            "node_memory_MemTotal_bytes",
            "node_cpu_seconds_total",
            "node_load1",
        }
    ),
}


def sample_names(metric: MetricWrapperBase) -> set[str]:
    family = metric.describe()[0]
    return {family.name + suffix for suffix in SUFFIXES[family.type]}


def catalogue_names() -> set[str]:
    from metrics import catalogue

    names: set[str] = set()
    for value in vars(catalogue).values():
        if isinstance(value, MetricWrapperBase):
            names |= sample_names(value)
    return names


def tenant_scoped_names() -> set[str]:
    """Sample names of the families that declare a `tenant_id` label."""
    from metrics import catalogue
    from metrics.collectors import REGISTRY

    names = {name for name, gauge in REGISTRY.items() if "tenant_id" in gauge.labels}
    for value in vars(catalogue).values():
        if isinstance(value, MetricWrapperBase) and "tenant_id" in value._labelnames:
            names |= sample_names(value)
    return names


def scrape_gauge_names() -> set[str]:
    from metrics.collectors import REGISTRY

    return set(REGISTRY)


def django_prometheus_names() -> set[str]:
    """django-prometheus's own families (django_http_*, django_db_*...), when it is installed."""
    from prometheus_client import REGISTRY

    try:
        from django_prometheus.middleware import Metrics
    except ImportError:
        return set()
    Metrics.get_instance()  # registers the HTTP families on first use
    return {
        name
        for name in REGISTRY._names_to_collectors  # no public listing exists
        if name.startswith("django_")
    }


def known_names() -> set[str]:
    exporters = set().union(*EXPORTER_METRICS.values())
    return (
        catalogue_names()
        | scrape_gauge_names()
        | django_prometheus_names()
        | PROMETHEUS_SYNTHETIC
        | exporters
    )
