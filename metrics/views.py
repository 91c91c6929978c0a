"""`GET /metrics`: Prometheus text exposition, optionally behind a bearer token."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from .exposition import render_metrics


def bearer_token(request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@never_cache
@require_GET
def metrics(request) -> HttpResponse:
    if not settings.ENABLE_METRICS:
        raise Http404("metrics are disabled (ENABLE_METRICS=false)")
    expected = settings.METRICS_TOKEN
    # Constant-time comparison: the response time must not reveal a matching prefix.
    if expected and not hmac.compare_digest(bearer_token(request).encode(), expected.encode()):
        response = HttpResponse("a valid bearer token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    # The classic text format (0.0.4), which every Prometheus 2.x parses; our names and
    # labels are plain ASCII, so the output is the same as the newer 1.0.0 one.
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
