from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import ApiKeyViewSet, AuditedTokenObtainPairView, CountedTokenRefreshView, TenantViewSet

router = SimpleRouter()
router.register("tenants", TenantViewSet, basename="tenant")
router.register("api-keys", ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("auth/token/", AuditedTokenObtainPairView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", CountedTokenRefreshView.as_view(), name="token-refresh"),
    *router.urls,
]
