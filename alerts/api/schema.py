"""OpenAPI descriptions of the authentication schemes the API accepts (drf-spectacular).

Imported by alerts.api.urls, so they are registered whenever the URLconf is loaded.
"""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AuditedJWTScheme(SimpleJWTScheme):
    target_class = "tenants.api.authentication.AuditedJWTAuthentication"


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.api.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A tenant API key: `Authorization: Api-Key trv_<prefix>_<secret>`.",
        }


class ReceiverScheme(OpenApiAuthenticationExtension):
    target_class = "alerts.api.authentication.ReceiverAuthentication"
    name = "receiverAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A tenant API key or the platform's ALERT_RECEIVER_TOKEN as a "
            "bearer token (Prometheus `authorization`), or as the basic-auth password.",
        }
