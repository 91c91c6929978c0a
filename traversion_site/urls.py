from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from alerts import runbooks
from alerts.api import urls as alert_urls
from metrics import views as metrics_views

from . import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("alerts/live/", include("alerts.live.urls")),
    path("docs/runbooks/", runbooks.runbooks, name="runbooks"),
    path("api/v1/", include("tenants.api.urls")),
    path("api/v1/", include(alert_urls.urlpatterns)),
    path("api/v1/", include("events.api.urls")),
    path("api/internal/", include(alert_urls.internal_urlpatterns)),
    *alert_urls.receiver_urlpatterns,
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
