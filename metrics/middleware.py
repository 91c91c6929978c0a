"""HTTP instrumentation: django-prometheus's middleware pair, extended with our families.

`PrometheusBeforeMiddleware` goes first in MIDDLEWARE and `PrometheusAfterMiddleware`
last (settings.py adds both when ENABLE_METRICS is true). They are django-prometheus's
own classes, extended through its hooks (`metrics_cls`), not patched:

- django-prometheus keeps its `django_http_*` families;
- the outermost middleware also records `traversion_http_requests_total` and
  `traversion_http_request_duration_seconds` with the route *pattern* as `endpoint`
  (never the raw path, so ids in URLs cannot explode the series count), the request's
  tenant as `tenant_id` when the view resolved one, and the time spent in the whole
  middleware stack, which is what a client waits for.

The hot path does two dictionary lookups and two metric updates: labelled children are
kept in a dict keyed by their label tuple (the label sets are bounded by design), which
skips prometheus_client's per-call label validation and lock.
"""

from __future__ import annotations

import re
from functools import lru_cache
from time import perf_counter
from types import MethodType

from django_prometheus import middleware as django_prometheus

from .catalogue import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from .disabled import DisabledMetric
from .labels import HTTP_METHODS, NO_TENANT, OTHER_METHOD, UNMATCHED_ENDPOINT, tenant_label

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_ESCAPE = re.compile(r"\\(.)")


@lru_cache(maxsize=1024)
def endpoint_from_route(route: str) -> str:
    """`api/v1/^tenants/(?P<slug>[^/.]+)/$` -> `/api/v1/tenants/<slug>/`.

    Django joins the patterns of nested includes into `ResolverMatch.route`; regex
    patterns (DRF routers) keep their anchors and groups, which read badly on a
    dashboard. The result is still the pattern, one value per route.
    """
    endpoint = _NAMED_GROUP.sub(r"<\1>", route)
    endpoint = endpoint.replace("^", "").replace("$", "")
    endpoint = _ESCAPE.sub(r"\1", endpoint)
    return "/" + endpoint.lstrip("/")


def endpoint_of(request) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return UNMATCHED_ENDPOINT
    return endpoint_from_route(match.route)


def tenant_of(request, response) -> str:
    """The tenant the view resolved, if any.

    Plain Django views set `request.tenant`; DRF sets it on its own Request wrapper
    (tenants.api.permissions.attach_tenant), which a response carries in its
    `renderer_context`.
    """
    tenant = getattr(request, "tenant", None)
    if tenant is None:
        context = getattr(response, "renderer_context", None)
        if context:
            tenant = getattr(context.get("request"), "tenant", None)
    return NO_TENANT if tenant is None else tenant_label(tenant)


class InlineUnderAsgi:
    """Run the middleware's hooks inline when Django serves ASGI.

    Under ASGI, Django calls a sync middleware hook through sync_to_async: a hop to a
    worker thread and back, for process_request, process_response and again for every
    view-level hook. These hooks only update in-memory or mmap-backed counters and never
    block, so they run on the event loop directly; under WSGI nothing changes.
    """

    # process_exception is left alone: Django always calls the exception stack synchronously.
    VIEW_HOOKS = ("process_view", "process_template_response")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.async_mode:
            # Django wraps a hook with sync_to_async unless it is a coroutine function.
            for name in self.VIEW_HOOKS:
                hook = getattr(self, name, None)
                if hook is not None:
                    setattr(self, name, _as_coroutine_method(self, hook))

    def __call__(self, request):
        if self.async_mode:
            return self._inline_acall(request)
        return super().__call__(request)

    async def _inline_acall(self, request):
        response = self.process_request(request)
        response = response or await self.get_response(request)
        return self.process_response(request, response)


def _as_coroutine_method(instance, hook):
    """A coroutine *method* (Django names the class through `__self__` in its checks)."""

    async def inline(self, *args, **kwargs):
        return hook(*args, **kwargs)

    return MethodType(inline, instance)


class _Absent:
    """A class attribute that hides the inherited one: `hasattr(instance, name)` is False."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        raise AttributeError(self.name)


class HttpMetrics(django_prometheus.Metrics):
    """django-prometheus's HTTP families, through its `Metrics` hook.

    One instance per process, shared with django-prometheus's own `Metrics.get_instance()`
    so that nothing registers the django_http_* families twice.

    `register_metric` leaves out the families that cost a metric update on every
    request and add nothing: the "before middlewares" totals and latency (the
    traversion_http_* families measure exactly that, per route), the count by view and
    transport (the same as the count by status and view; TLS ends at the proxy), the
    charset (always utf-8), the template name (every DRF response has one), AJAX
    requests, the request/response body size histograms (31 buckets each, the largest
    part of the django_http_* exposition), and the requests by method and responses by
    status (sums of `traversion_http_requests_total` over its other labels). They become
    no-ops. What remains: responses by status/view/method, latency by view/method,
    exceptions by type and by view, streaming responses.
    """

    LEFT_OUT = frozenset(
        {
            "django_http_requests_before_middlewares_total",
            "django_http_responses_before_middlewares_total",
            "django_http_requests_latency_including_middlewares_seconds",
            "django_http_requests_unknown_latency_including_middlewares_total",
            "django_http_requests_total_by_view_transport_method",
            "django_http_requests_total_by_transport",
            "django_http_responses_total_by_charset",
            "django_http_responses_total_by_templatename",
            "django_http_ajax_requests_total",
            "django_http_requests_body_total_bytes",
            "django_http_responses_body_total_bytes",
            "django_http_requests_total_by_method",
            "django_http_responses_total_by_status",
        }
    )

    def register_metric(self, metric_cls, name, documentation, labelnames=(), **kwargs):
        if name in self.LEFT_OUT:
            return DisabledMetric(metric_cls._type, name, documentation, tuple(labelnames))
        return super().register_metric(metric_cls, name, documentation, labelnames, **kwargs)

    @classmethod
    def get_instance(cls) -> django_prometheus.Metrics:
        if django_prometheus.Metrics._instance is None:
            django_prometheus.Metrics._instance = cls()
        return django_prometheus.Metrics._instance


class CachedChildren:
    """django-prometheus's `label_metric` hook, remembering each labelled child.

    Its middleware calls `metric.labels(**labels)` for every update; the label sets are
    bounded (views, methods, statuses), so the child is looked up in a dict instead.
    """

    def __init__(self, *args, **kwargs):
        self._children: dict[tuple, object] = {}
        super().__init__(*args, **kwargs)

    def label_metric(self, metric, request, response=None, **labels):
        if not labels:
            return metric
        key = (id(metric), *labels.values())  # each call site passes its labels in one order
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child


class PrometheusBeforeMiddleware(InlineUnderAsgi, django_prometheus.PrometheusBeforeMiddleware):
    """Outermost: the traversion_http_* families, timed from django-prometheus's start mark.

    (Its own "before middlewares" families are left out, see HttpMetrics.)
    """

    metrics_cls = HttpMetrics

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._requests: dict[tuple[str, str, str, str], object] = {}
        self._durations: dict[tuple[str, str], object] = {}

    def process_request(self, request):
        # django-prometheus's own "before" families are left out: only its start mark.
        request.prometheus_before_middleware_event = perf_counter()

    def process_response(self, request, response):
        method = request.method if request.method in HTTP_METHODS else OTHER_METHOD
        endpoint = endpoint_of(request)

        key = (method, endpoint, str(response.status_code), tenant_of(request, response))
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = HTTP_REQUESTS.labels(*key)
        counter.inc()

        started = getattr(request, "prometheus_before_middleware_event", None)
        if started is not None:  # set by process_request, with time.perf_counter
            duration_key = (method, endpoint)
            histogram = self._durations.get(duration_key)
            if histogram is None:
                histogram = self._durations[duration_key] = HTTP_REQUEST_DURATION.labels(
                    *duration_key
                )
            histogram.observe(perf_counter() - started)
        return response


class PrometheusAfterMiddleware(
    InlineUnderAsgi, CachedChildren, django_prometheus.PrometheusAfterMiddleware
):
    """Innermost: django-prometheus's per-view families, from the same Metrics instance.

    Its request and response hooks are narrowed to the families HttpMetrics keeps:
    django-prometheus's own would still work out the transport, the charset and the
    body sizes of every request and response for families that are left out.
    process_exception is django-prometheus's, unchanged.
    """

    metrics_cls = HttpMetrics

    # The only families of its view and template-response hooks are left out: without
    # the hooks, Django calls nothing of this middleware between the request and the
    # response (under ASGI, one coroutine less per request).
    process_view = _Absent()
    process_template_response = _Absent()

    def process_request(self, request):
        request.prometheus_after_middleware_event = perf_counter()

    def process_response(self, request, response):
        metrics = self.metrics
        method = self._method(request)
        view = self._get_view_name(request)
        status = str(response.status_code)
        self.label_metric(
            metrics.responses_by_status_view_method,
            request,
            response,
            status=status,
            view=view,
            method=method,
        ).inc()
        if getattr(response, "streaming", False):
            self.label_metric(metrics.responses_streaming, request, response).inc()
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is None:
            self.label_metric(metrics.requests_unknown_latency, request, response).inc()
        else:
            self.label_metric(
                metrics.requests_latency_by_view_method, request, response, view=view, method=method
            ).observe(perf_counter() - started)
        return response
