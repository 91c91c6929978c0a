"""The live board page, its JSON snapshot, and the login page in front of them."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, LogoutView
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from tenants.api.permissions import role_allows
from tenants.choices import Role
from tenants.models import Tenant
from tenants.scoping import TenantSelectionError

from .publish import SEVERITY_ORDER, board_snapshot
from .routing import SOCKET_PATH
from .tenancy import resolve_board_tenant

#: The REST API the page's buttons call (DESIGN, API surface).
API_BASE = "/api/v1/"
SILENCE_MINUTES = 60


def tenant_choices(user):
    """The tenants a user may open a board for: their own, or every tenant for operators."""
    tenants = Tenant.objects.filter(is_active=True).order_by("name")
    return tenants if user.is_superuser else tenants.filter(memberships__user=user)


@require_GET
@login_required(login_url="alerts-live-login")
def board(request: HttpRequest) -> HttpResponse:
    try:
        context = resolve_board_tenant(request)
    except TenantSelectionError as exc:
        if exc.status == 400:  # several tenants: let the user pick one
            return render(request, "alerts/live.html", {"choices": tenant_choices(request.user)})
        if exc.status == 404:
            raise Http404(str(exc)) from exc
        raise PermissionDenied(str(exc)) from exc
    tenant = context.tenant
    query = "?" + urlencode({"tenant": tenant.slug})
    config = {
        "tenant": {"slug": tenant.slug, "name": tenant.name},
        "socketPath": SOCKET_PATH + query,
        "snapshotUrl": reverse("alerts-live-snapshot") + query,
        "loginUrl": reverse("alerts-live-login")
        + "?"
        + urlencode({"next": request.get_full_path()}),
        "apiBase": API_BASE,
        "csrfToken": get_token(request),
        "canWrite": role_allows(context.role, Role.MEMBER),
        "severities": list(SEVERITY_ORDER),
        "silenceMinutes": SILENCE_MINUTES,
    }
    choices = tenant_choices(request.user)
    return render(
        request,
        "alerts/live.html",
        {
            "tenant": tenant,
            "role": context.role,
            "config": config,
            "choices": choices if len(choices) > 1 else [],
        },
    )


@require_GET
@never_cache
def snapshot(request: HttpRequest) -> JsonResponse:
    """The tenant's whole board (publish.board_snapshot), for a page that (re)connects."""
    if not request.user.is_authenticated:
        return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
    try:
        context = resolve_board_tenant(request)
    except TenantSelectionError as exc:
        return JsonResponse({"detail": str(exc)}, status=exc.status)
    return JsonResponse(board_snapshot(context.tenant))


class BoardLoginView(LoginView):
    """Sign-in for board users, who need not be staff (the admin's login requires it)."""

    template_name = "alerts/live_login.html"
    next_page = "alerts-live"
    redirect_authenticated_user = True


class BoardLogoutView(LogoutView):
    next_page = "alerts-live-login"
