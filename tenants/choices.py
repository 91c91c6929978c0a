"""Choices and constants of the tenants app, shared by every app that records audit events."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# Higher rank can do everything a lower rank can.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class AuthMethod(models.TextChoices):
    SESSION = "session", "Session"
    JWT = "jwt", "JWT"
    API_KEY = "api_key", "API key"


class AuthResult(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class AuditAction:
    """Audit action names. Other apps add their own with the same `area.verb` shape."""

    LOGIN = "auth.login"
    CROSS_TENANT = "security.cross_tenant_access"
    PERMISSION_DENIED = "security.permission_denied"
    TENANT_CREATED = "tenant.created"
    TENANT_UPDATED = "tenant.updated"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"


API_KEY_HEADER_KEYWORD = "Api-Key"
API_KEY_PREFIX = "trv"
DEFAULT_STORAGE_QUOTA_BYTES = 10 * 1024**3
