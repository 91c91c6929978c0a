"""Views of the alerting API (DESIGN §API surface).

Every viewset is tenant-scoped through `TenantScopedViewSetMixin`: the queryset is the
caller's tenant's rows, another tenant's object answers 404 and is recorded. Rules and
channels also list the global rows (tenant empty, the operators'), read-only to tenants.

Roles: viewers read; members write rules and silences, acknowledge, resend and test;
admins and owners manage channels. API keys act with their own role.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import audit
from tenants.api.authentication import ApiKeyAuthentication, ApiKeyUser, AuditedJWTAuthentication
from tenants.api.permissions import TenantRolePermission, attach_tenant, role_allows
from tenants.api.views import (
    AuditPermissionDeniedMixin,
    TenantScopedViewSetMixin,
    record_cross_tenant,
)
from tenants.choices import Role

from .. import receivers, rule_actions, testfire
from ..choices import AuditAction
from ..filtersets import (
    AlertEventFilter,
    AlertInstanceFilter,
    AlertRuleFilter,
    NotificationChannelFilter,
    NotificationFilter,
    SilenceFilter,
)
from ..models import (
    AlertEvent,
    AlertInstance,
    AlertRule,
    Notification,
    NotificationChannel,
    Silence,
)
from .authentication import PlatformReceiver, ReceiverAuthentication
from .permissions import GlobalRowsReadOnly
from .serializers import (
    AcknowledgeSerializer,
    AlertEventSerializer,
    AlertInstanceSerializer,
    AlertRuleSerializer,
    AlertTestRequestSerializer,
    AlertTestResponseSerializer,
    ChannelTestResultSerializer,
    ChannelTestSerializer,
    NotificationChannelSerializer,
    NotificationSerializer,
    PostableAlertSerializer,
    ReceiveResultSerializer,
    RuleToggleSerializer,
    SilenceSerializer,
    WebhookPayloadSerializer,
)

NOT_FOUND = OpenApiResponse(description="Not found (or another tenant's: recorded).")
DENIED = OpenApiResponse(description="Your role in this tenant does not allow this.")


def acting_user(request):
    """The database user behind a request, None for an API key."""
    user = request.user
    return None if isinstance(user, ApiKeyUser | PlatformReceiver) else user


class ForeignObjectFirstMixin:
    """Another tenant's object answers 404 (recorded) even when the role would refuse.

    The role check runs before the object is looked up, so without this a viewer who
    tries to change another tenant's rule would get 403 while a member gets 404. Every
    request for a foreign object answers the same 404, whoever sends it.
    """

    def permission_denied(self, request, message=None, code=None):
        lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
        if lookup is not None and getattr(request, "tenant", None) is not None:
            if not self.is_visible(lookup):
                self.get_object()  # raises 404, recording a foreign object
        super().permission_denied(request, message=message, code=code)

    def is_visible(self, lookup) -> bool:
        try:
            return self.get_queryset().filter(**{self.lookup_field: lookup}).exists()
        except (ValueError, TypeError, DjangoValidationError):
            return False


class TenantOrGlobalViewSetMixin(TenantScopedViewSetMixin):
    """The tenant's rows plus the global ones; global rows are read-only to tenants."""

    permission_classes = [*TenantScopedViewSetMixin.permission_classes, GlobalRowsReadOnly]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset.none()
        return self.queryset.visible_to(self.request.tenant)


class SchemaSafeMixin:
    """Schema generation runs without a request tenant: give it an empty queryset."""

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset.model.objects.none()
        return super().get_queryset()


# --- rules ------------------------------------------------------------------------------


@extend_schema_view(
    retrieve=extend_schema(
        description="A rule by id, or by name (the tenant's rule first, then the global one)."
    ),
    create=extend_schema(
        description="Create a rule. Accepts the guide's shape (`name`, `severity`, "
        "`description`, `query`, `channels` by name or id, `cooldown` in ms) as well as the "
        "full body. Invalid queries, templates, channels or thresholds answer 400."
    ),
)
class AlertRuleViewSet(ForeignObjectFirstMixin, TenantOrGlobalViewSetMixin, viewsets.ModelViewSet):
    queryset = AlertRule.objects.select_related("tenant").prefetch_related("channels")
    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilter
    ordering_fields = ["name", "severity", "created_at", "updated_at", "last_evaluated_at"]
    ordering = ["name"]
    # Runbooks call rules by name (`/rules/traversion_high_error_rate/toggle`).
    lookup_value_regex = "[^/]+"
    read_role = Role.VIEWER
    write_role = Role.MEMBER

    def get_object(self):
        value = str(self.kwargs.get(self.lookup_url_kwarg or self.lookup_field, ""))
        if value.isdigit():
            return super().get_object()
        tenant = self.request.tenant
        by_tenant = {r.tenant_id: r for r in self.get_queryset().filter(name=value)}
        rule = by_tenant.get(tenant.pk) or by_tenant.get(None)
        if rule is None:
            # Deliberately cross-tenant: tells a guess at another tenant's rule (recorded)
            # from a missing one; nothing of it reaches the response.
            if (
                AlertRule.objects.filter(name=value, tenant__isnull=False)
                .exclude(tenant=tenant)
                .exists()
            ):
                record_cross_tenant(self.request, AlertRule, value)
            raise Http404
        self.check_object_permissions(self.request, rule)
        return rule

    def is_visible(self, lookup) -> bool:
        if str(lookup).isdigit():
            return super().is_visible(lookup)
        return self.get_queryset().filter(name=lookup).exists()

    def perform_create(self, serializer):
        rule = serializer.save(tenant=self.request.tenant, created_by=acting_user(self.request))
        audit.record(
            AuditAction.RULE_CREATED, request=self.request, tenant=rule.tenant, rule=rule.name
        )

    def perform_update(self, serializer):
        rule = serializer.save()
        audit.record(
            AuditAction.RULE_UPDATED,
            request=self.request,
            tenant=rule.tenant or self.request.tenant,
            rule=rule.name,
            fields=sorted(serializer.validated_data),
        )

    def perform_destroy(self, instance):
        name, tenant = instance.name, instance.tenant or self.request.tenant
        instance.delete()
        audit.record(AuditAction.RULE_DELETED, request=self.request, tenant=tenant, rule=name)

    @extend_schema(
        request=RuleToggleSerializer,
        responses={200: AlertRuleSerializer, 403: DENIED, 404: NOT_FOUND},
        description="The guide's toggleAlertRule: flips `enabled`, or sets it when given.",
    )
    @action(detail=True, methods=["post"])
    def toggle(self, request, pk=None):
        rule = self.get_object()
        body = RuleToggleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        enabled = body.validated_data.get("enabled", not rule.enabled)
        rule = rule_actions.set_enabled(rule, enabled, request=request)
        return Response(self.get_serializer(rule).data)


# --- instances, history, ledger -----------------------------------------------------------


class AlertInstanceViewSet(
    ForeignObjectFirstMixin,
    SchemaSafeMixin,
    TenantScopedViewSetMixin,
    viewsets.ReadOnlyModelViewSet,
):
    queryset = AlertInstance.objects.select_related("rule", "tenant", "acknowledged_by")
    serializer_class = AlertInstanceSerializer
    filterset_class = AlertInstanceFilter
    ordering_fields = ["last_state_change_at", "firing_since", "created_at", "state", "value"]
    ordering = ["-last_state_change_at", "-id"]
    action_roles = {"acknowledge": Role.MEMBER}

    @extend_schema(
        request=AcknowledgeSerializer,
        responses={
            200: AlertInstanceSerializer,
            403: DENIED,
            404: NOT_FOUND,
            409: OpenApiResponse(description="Not active, or already acknowledged."),
        },
        description="Acknowledge the alert: repeats stop until it resolves.",
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        from ..services import acknowledge

        instance = self.get_object()
        body = AcknowledgeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            # The service records the acknowledgement (history, audit, channels).
            acknowledge(instance, request.user, body.validated_data["comment"], request=request)
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        instance.refresh_from_db()
        return Response(self.get_serializer(instance).data)


class AlertEventViewSet(SchemaSafeMixin, TenantScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """The firing history: one row per state change, repeat, acknowledgement or test."""

    queryset = AlertEvent.objects.select_related("rule", "tenant")
    serializer_class = AlertEventSerializer
    filterset_class = AlertEventFilter
    ordering_fields = ["timestamp", "id"]
    ordering = ["-timestamp", "-id"]


class NotificationViewSet(
    ForeignObjectFirstMixin,
    SchemaSafeMixin,
    TenantScopedViewSetMixin,
    viewsets.ReadOnlyModelViewSet,
):
    """The delivery ledger: one row per (history event, channel)."""

    queryset = Notification.objects.select_related("channel", "tenant", "event__rule")
    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
    ordering_fields = ["created_at", "sent_at", "status", "attempts", "id"]
    ordering = ["-created_at", "-id"]
    action_roles = {"resend": Role.MEMBER}

    @extend_schema(
        request=None,
        responses={
            202: NotificationSerializer,
            403: DENIED,
            404: NOT_FOUND,
            409: OpenApiResponse(description="The row is already sent or on its way."),
        },
        description="Queue a failed or suppressed notification for delivery again.",
    )
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        from ..resend import ResendRefused, resend

        row = self.get_object()
        try:
            resend(row)
        except ResendRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        audit.record(
            AuditAction.NOTIFICATION_RESENT,
            request=request,
            tenant=request.tenant,
            notification=row.pk,
            channel=row.channel.name,
        )
        row.refresh_from_db()
        return Response(self.get_serializer(row).data, status=status.HTTP_202_ACCEPTED)


# --- silences -------------------------------------------------------------------------------


class SilenceViewSet(
    ForeignObjectFirstMixin,
    SchemaSafeMixin,
    TenantScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Silences (Alertmanager matchers). They end by expiring, never by deletion."""

    queryset = Silence.objects.select_related("tenant", "created_by")
    serializer_class = SilenceSerializer
    filterset_class = SilenceFilter
    ordering_fields = ["starts_at", "ends_at", "created_at"]
    ordering = ["-starts_at", "-id"]
    action_roles = {"expire": Role.MEMBER}

    def perform_create(self, serializer):
        silence = serializer.save(tenant=self.request.tenant, created_by=acting_user(self.request))
        audit.record(
            AuditAction.SILENCE_CREATED,
            request=self.request,
            tenant=self.request.tenant,
            silence=silence.pk,
            matchers=silence.matchers,
        )

    def perform_update(self, serializer):
        silence = serializer.save()
        audit.record(
            AuditAction.SILENCE_UPDATED,
            request=self.request,
            tenant=self.request.tenant,
            silence=silence.pk,
            fields=sorted(serializer.validated_data),
        )

    @extend_schema(
        request=None,
        responses={
            200: SilenceSerializer,
            403: DENIED,
            404: NOT_FOUND,
            409: OpenApiResponse(description="The silence has already ended."),
        },
        description="End the silence now; still-firing alerts it held back notify again.",
    )
    @action(detail=True, methods=["post"])
    def expire(self, request, pk=None):
        from ..services import expire_silence

        silence = self.get_object()
        try:
            expire_silence(silence, request.user, request=request)  # audits it
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        silence.refresh_from_db()
        return Response(self.get_serializer(silence).data)


# --- channels ------------------------------------------------------------------------------


class NotificationChannelViewSet(
    ForeignObjectFirstMixin, TenantOrGlobalViewSetMixin, viewsets.ModelViewSet
):
    """Notification channels. Secrets in `config` are write-only."""

    queryset = NotificationChannel.objects.select_related("tenant")
    serializer_class = NotificationChannelSerializer
    filterset_class = NotificationChannelFilter
    ordering_fields = ["name", "type", "created_at"]
    ordering = ["name"]
    read_role = Role.VIEWER
    write_role = Role.ADMIN

    def perform_create(self, serializer):
        channel = serializer.save(tenant=self.request.tenant)
        audit.record(
            AuditAction.CHANNEL_CREATED,
            request=self.request,
            tenant=channel.tenant,
            channel=channel.name,
            type=channel.type,
        )

    def perform_update(self, serializer):
        channel = serializer.save()
        audit.record(
            AuditAction.CHANNEL_UPDATED,
            request=self.request,
            tenant=channel.tenant or self.request.tenant,
            channel=channel.name,
            fields=sorted(serializer.validated_data),
        )

    def perform_destroy(self, instance):
        name, tenant = instance.name, instance.tenant or self.request.tenant
        instance.delete()
        audit.record(AuditAction.CHANNEL_DELETED, request=self.request, tenant=tenant, channel=name)

    @extend_schema(
        request=ChannelTestSerializer,
        responses={200: ChannelTestResultSerializer, 403: DENIED, 404: NOT_FOUND},
        description="Send a test message through this channel now and say whether the "
        "provider took it (status sent or failed, with the provider's error).",
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        from ..channel_test import send_channel_test

        channel = self.get_object()
        body = ChannelTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = send_channel_test(
            channel,
            tenant=request.tenant,
            actor=request.user.get_username(),
            text=body.validated_data["message"],
        )
        audit.record(
            AuditAction.CHANNEL_TESTED,
            request=request,
            tenant=request.tenant,
            channel=channel.name,
            status=result.status,
        )
        return Response(ChannelTestResultSerializer(result).data)


# --- test firing ----------------------------------------------------------------------------


class AlertTestView(AuditPermissionDeniedMixin, APIView):
    """The guide's `POST /api/internal/alerts/test`."""

    permission_classes = [permissions.IsAuthenticated, TenantRolePermission]
    read_role = Role.VIEWER

    @property
    def write_role(self) -> str:
        # Rendering only (dryRun) reads; sending writes.
        dry_run = isinstance(self.request.data, dict) and self.request.data.get("dryRun") is True
        return Role.VIEWER if dry_run else Role.MEMBER

    def find_rule(self, request, name: str) -> AlertRule:
        """The caller's rule (or a global one) of that name; 404 otherwise."""
        try:
            return testfire.find_rule(request.tenant, name)
        except AlertRule.DoesNotExist:
            # Deliberately cross-tenant: only to record a guess at another tenant's rule.
            if (
                AlertRule.objects.filter(name=name, tenant__isnull=False)
                .exclude(tenant=request.tenant)
                .exists()
            ):
                record_cross_tenant(request, AlertRule, name)
            raise NotFound("No rule of that name.") from None

    def permission_denied(self, request, message=None, code=None):
        # As for every object: another tenant's rule is a 404, whatever the role.
        name = request.data.get("ruleName") if isinstance(request.data, dict) else None
        if isinstance(name, str) and name and getattr(request, "tenant", None) is not None:
            self.find_rule(request, name)
        super().permission_denied(request, message=message, code=code)

    @extend_schema(
        request=AlertTestRequestSerializer,
        responses={
            200: AlertTestResponseSerializer,
            400: OpenApiResponse(description="Invalid body."),
            404: NOT_FOUND,
        },
        description="Evaluate the named rule's condition on testData instead of querying, "
        "render what each channel would receive, and send it marked [TEST] (unless dryRun, "
        "or the condition does not hold). A sent test is recorded in history as a test.",
    )
    def post(self, request):
        body = AlertTestRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        tenant = request.tenant
        rule = self.find_rule(request, data["ruleName"])
        result = testfire.fire_test(
            rule,
            data["testData"],
            tenant=tenant,
            actor=request.user.get_username(),
            dry_run=data["dryRun"],
            operator=bool(getattr(request.user, "is_superuser", False)),
        )
        audit.record(
            AuditAction.RULE_TEST_FIRED,
            request=request,
            tenant=tenant,
            rule=rule.name,
            dry_run=result.dry_run,
            sent=result.sent,
            condition_met=result.condition_met,
        )
        return Response(
            {
                "ruleName": rule.name,
                "ruleId": rule.pk,
                "value": result.value,
                "labels": result.labels,
                "annotations": result.annotations,
                "conditionMet": result.condition_met,
                "dryRun": result.dry_run,
                "sent": result.sent,
                "eventId": result.event.pk if result.event else None,
                "notifications": [
                    {
                        "channel": item.channel.name,
                        "channelId": item.channel.pk,
                        "type": item.channel.type,
                        "status": item.status,
                        "notificationId": item.notification_id,
                        "payload": item.payload,
                    }
                    for item in result.notifications
                ],
            }
        )


# --- receivers (Prometheus / Alertmanager push) ----------------------------------------------


class ReceiverView(AuditPermissionDeniedMixin, APIView):
    """Shared plumbing: who is pushing, and for which tenant."""

    authentication_classes = [
        ReceiverAuthentication,
        ApiKeyAuthentication,
        AuditedJWTAuthentication,
    ]
    permission_classes = [permissions.IsAuthenticated]

    def source(self, request) -> receivers.Source:
        user = request.user
        if isinstance(user, PlatformReceiver) or getattr(user, "is_superuser", False):
            # The platform's own Prometheus: each alert names its tenant with a label.
            return receivers.Source(tenant=None, route_by_label=True)
        attach_tenant(request)
        if not role_allows(request.tenant_role, Role.MEMBER):
            self.permission_denied(request, message="Pushing alerts needs the member role.")
        return receivers.Source(tenant=request.tenant, route_by_label=False)

    def respond(self, result: receivers.IngestResult) -> Response:
        return Response(
            {
                "success": True,
                "received": result.received,
                "firing": result.firing,
                "resolved": result.resolved,
                "rejected": result.rejected,
            }
        )


class AlertmanagerV2AlertsView(ReceiverView):
    """Alertmanager API v2 `POST /api/v2/alerts`: Prometheus can name Traversion its
    alertmanager (`alerting.alertmanagers` with `api_version: v2`)."""

    @extend_schema(
        request=PostableAlertSerializer(many=True),
        responses={200: ReceiveResultSerializer, 400: OpenApiResponse(description="Invalid.")},
        description="Alerts as Prometheus pushes them (labels, annotations, startsAt, "
        "endsAt, generatorURL). Authenticate with a tenant API key (Bearer, basic-auth "
        "password or Api-Key header) or the platform's ALERT_RECEIVER_TOKEN.",
    )
    def post(self, request):
        source = self.source(request)
        body = PostableAlertSerializer(data=request.data, many=True)
        body.is_valid(raise_exception=True)
        alerts = [receivers.ExternalAlert.from_v2(item) for item in body.validated_data]
        result = receivers.ingest(alerts, source, request=request)
        return self.respond(result)


class AlertmanagerWebhookView(ReceiverView):
    """Alertmanager's webhook receiver (payload version 4), as `webhook_configs` sends it."""

    @extend_schema(
        request=WebhookPayloadSerializer,
        responses={200: ReceiveResultSerializer, 400: OpenApiResponse(description="Invalid.")},
        description="Alertmanager webhook (version 4). Same authentication and routing as "
        "/api/v2/alerts.",
    )
    def post(self, request):
        source = self.source(request)
        body = WebhookPayloadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payload = body.validated_data
        alerts = [receivers.ExternalAlert.from_webhook(item, payload) for item in payload["alerts"]]
        result = receivers.ingest(alerts, source, request=request)
        return self.respond(result)
