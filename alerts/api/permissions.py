"""Permissions of the alerting API beyond the tenant role check.

Global rows (tenant NULL: the operators' rules and channels) are listed to every tenant
so that people can see what watches them, but only operators (superusers) change them.
"""

from __future__ import annotations

from rest_framework import permissions


class GlobalRowsReadOnly(permissions.BasePermission):
    """A tenant can read a global row; only an operator can change it."""

    message = "Global rules and channels are managed by the platform operators."

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in permissions.SAFE_METHODS or obj.tenant_id is not None:
            return True
        return bool(request.user and request.user.is_superuser)
