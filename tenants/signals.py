"""Audit of interactive logins (admin, browsable API) and of failed credential checks."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from . import audit
from .choices import AuditAction, AuthMethod, AuthResult

#: Views that authenticate users themselves (the JWT view) set this attribute on the
#: request so failures are recorded with their method rather than as a session login.
LOGIN_METHOD_ATTR = "traversion_login_method"


def tenant_of(user):
    if user is None:
        return None
    membership = user.memberships.select_related("tenant").order_by("created_at").first()
    return membership.tenant if membership else None


def username_from(credentials: dict) -> str:
    return str(credentials.get("username") or credentials.get("email") or "")[:150]


@receiver(user_logged_in, dispatch_uid="tenants.audit_login_success")
def audit_login_success(sender, request, user, **kwargs):
    audit.record(
        AuditAction.LOGIN,
        request=request,
        tenant=tenant_of(user),
        actor=user.get_username(),
        method=getattr(request, LOGIN_METHOD_ATTR, AuthMethod.SESSION),
        result=AuthResult.SUCCESS,
    )


@receiver(user_login_failed, dispatch_uid="tenants.audit_login_failure")
def audit_login_failure(sender, credentials, request=None, **kwargs):
    from django.contrib.auth import get_user_model

    username = username_from(credentials)
    user = get_user_model().objects.filter(username=username).first() if username else None
    audit.record(
        AuditAction.LOGIN,
        request=request,
        tenant=tenant_of(user),
        actor=username,
        method=getattr(request, LOGIN_METHOD_ATTR, AuthMethod.SESSION),
        result=AuthResult.FAILURE,
    )
