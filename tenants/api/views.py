"""Tenant-scoped DRF plumbing, and the tenant, API key and token endpoints."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from metrics.security import observe_jwt_issued

from .. import audit
from ..choices import AuditAction, AuthMethod, AuthResult, Role
from ..models import ApiKey, Tenant
from ..signals import LOGIN_METHOD_ATTR, tenant_of
from .authentication import ApiKeyUser
from .permissions import TenantRolePermission, attach_tenant, role_allows
from .serializers import ApiKeyCreateSerializer, ApiKeySerializer, TenantSerializer


def record_cross_tenant(request, model, lookup: str) -> None:
    audit.record(
        AuditAction.CROSS_TENANT,
        request=request,
        tenant=getattr(request, "tenant", None),
        model=model._meta.label,
        object_id=str(lookup)[:64],
        path=request.path,
    )


def exists_elsewhere(model, lookup_field: str, value, tenant) -> bool:
    """Whether the object exists in some other tenant.

    Deliberately cross-tenant: it only tells a guess at another tenant's object (recorded
    as an attack) from a plain missing one. Nothing from it reaches the response.
    """
    try:
        queryset = model._base_manager.filter(**{lookup_field: value})
        if tenant is not None:
            queryset = queryset.exclude(tenant=tenant)
        return queryset.exists()
    except (ValueError, TypeError, DjangoValidationError):  # a malformed id is just missing
        return False


class AuditPermissionDeniedMixin:
    def permission_denied(self, request, message=None, code=None):
        if request.user and request.user.is_authenticated:
            audit.record(
                AuditAction.PERMISSION_DENIED,
                request=request,
                tenant=getattr(request, "tenant", None),
                view=type(self).__name__,
                view_action=getattr(self, "action", None) or request.method,
            )
        super().permission_denied(request, message=message, code=code)


class TenantScopedViewSetMixin(AuditPermissionDeniedMixin):
    """Queryset narrowed to request.tenant; a foreign object answers 404 and is recorded."""

    permission_classes = [permissions.IsAuthenticated, TenantRolePermission]
    read_role = Role.VIEWER
    write_role = Role.MEMBER

    def get_queryset(self):
        return super().get_queryset().for_tenant(self.request.tenant)

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            lookup_kwarg = self.lookup_url_kwarg or self.lookup_field
            value = self.kwargs.get(lookup_kwarg)
            model = self.get_queryset().model
            if exists_elsewhere(model, self.lookup_field, value, self.request.tenant):
                record_cross_tenant(self.request, model, value)
            raise

    def perform_create(self, serializer):
        serializer.save(tenant=self.request.tenant)


class TenantViewSet(
    AuditPermissionDeniedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The tenants the caller belongs to. Operators (superusers) create them."""

    serializer_class = TenantSerializer
    queryset = Tenant.objects.all()
    lookup_field = "slug"
    ordering_fields = ["slug", "name", "created_at"]

    def get_queryset(self):
        user = self.request.user
        if isinstance(user, ApiKeyUser):
            return Tenant.objects.filter(pk=user.api_key.tenant_id)
        if user.is_superuser:
            return Tenant.objects.all()
        return Tenant.objects.filter(memberships__user=user, is_active=True)

    def get_object(self):
        try:
            tenant = super().get_object()
        except Http404:
            slug = self.kwargs.get(self.lookup_field)
            if Tenant.objects.filter(slug=slug).exists():
                record_cross_tenant(self.request, Tenant, slug)
            raise
        return tenant

    def check_object_permissions(self, request, obj):
        super().check_object_permissions(request, obj)
        if request.method in permissions.SAFE_METHODS or request.user.is_superuser:
            return
        request.META["HTTP_X_TENANT"] = obj.slug
        attach_tenant(request)
        if not role_allows(request.tenant_role, Role.ADMIN):
            self.permission_denied(request, message="Only owners and admins change a tenant.")

    def create(self, request, *args, **kwargs):
        if not request.user.is_superuser:
            self.permission_denied(request, message="Only operators create tenants.")
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer):
        tenant = serializer.save()
        audit.record(AuditAction.TENANT_CREATED, request=self.request, tenant=tenant)

    def perform_update(self, serializer):
        tenant = serializer.save()
        audit.record(
            AuditAction.TENANT_UPDATED,
            request=self.request,
            tenant=tenant,
            fields=sorted(serializer.validated_data),
        )


class ApiKeyViewSet(
    TenantScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """A tenant's API keys. The full key is in the create response only; DELETE revokes."""

    queryset = ApiKey.objects.select_related("created_by")
    read_role = Role.ADMIN
    write_role = Role.ADMIN
    filterset_fields = ["role"]
    ordering_fields = ["created_at", "name", "last_used_at"]

    def get_serializer_class(self):
        return ApiKeyCreateSerializer if self.action == "create" else ApiKeySerializer

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        role = serializer.validated_data["role"]
        if not role_allows(request.tenant_role, role):
            self.permission_denied(request, message="You cannot issue a key above your role.")
        user = request.user if not isinstance(request.user, ApiKeyUser) else None
        key, raw_key = ApiKey.issue(
            request.tenant, serializer.validated_data["name"], role=role, created_by=user
        )
        audit.record(
            AuditAction.API_KEY_CREATED,
            request=request,
            tenant=request.tenant,
            prefix=key.prefix,
            name=key.name,
        )
        body = ApiKeySerializer(key).data
        body["key"] = raw_key
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        if instance.revoke():
            audit.record(
                AuditAction.API_KEY_REVOKED,
                request=self.request,
                tenant=self.request.tenant,
                prefix=instance.prefix,
                name=instance.name,
            )


class AuditedTokenObtainPairView(TokenObtainPairView):
    """JWT obtain; records the login attempt with method `jwt`."""

    def post(self, request, *args, **kwargs):
        setattr(request._request, LOGIN_METHOD_ATTR, AuthMethod.JWT)
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        # Failures were recorded by the user_login_failed receiver.
        audit.record(
            AuditAction.LOGIN,
            request=request,
            tenant=tenant_of(serializer.user),
            actor=serializer.user.get_username(),
            method=AuthMethod.JWT,
            result=AuthResult.SUCCESS,
        )
        observe_jwt_issued()
        return Response(serializer.validated_data, status=status.HTTP_200_OK)


class CountedTokenRefreshView(TokenRefreshView):
    """JWT refresh; a new access token is an issued token too."""

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        if response.status_code == status.HTTP_200_OK:
            observe_jwt_issued()
        return response
