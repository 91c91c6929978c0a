from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter
from rest_framework_simplejwt.views import TokenRefreshView

from .views import ApiKeyViewSet, AuditedTokenObtainPairView, TenantViewSet

router = SimpleRouter()
router.register("tenants", TenantViewSet, basename="tenant")
router.register("api-keys", ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("auth/token/", AuditedTokenObtainPairView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    *router.urls,
]
