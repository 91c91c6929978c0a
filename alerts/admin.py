"""Admin for rule management: rules, channels, silences, and read-only history and ledger.

Operators (superusers) see and manage everything, global rows included. A staff user who
is owner or admin of tenants (a "tenant admin") manages those tenants' rows only, through
`TenantScopedAdminMixin`; the membership role is what grants it, no Django permission
needs to be assigned. The admin holds no logic of its own: queries are validated by their
datasource, templates by the template engine, channel configs by their transport, and the
actions call the same services as the API.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.utils.html import format_html

from tenants.admin import TenantScopedAdminMixin, administered_tenants

from . import channel_config, rule_actions, testfire
from .channel_test import send_channel_test
from .choices import ACTIVE_STATES, Datasource, InstanceState
from .models import AlertEvent, AlertInstance, AlertRule, Notification, NotificationChannel, Silence
from .silences import LABEL_NAME, validate_matchers

SILENCE_FOR = timedelta(hours=1)
#: Only the tenants that own rows the user can see: a tenant admin never learns the
#: names of other tenants from the filter sidebar.
TENANT_FILTER = ("tenant", admin.RelatedOnlyFieldListFilter)
#: Instance states shown inline on a rule ("current": not inactive, not resolved).
CURRENT_STATES = [*ACTIVE_STATES, InstanceState.NODATA, InstanceState.ERROR]


def is_tenant_admin(user) -> bool:
    return bool(user.is_active and user.is_staff and administered_tenants(user).exists())


class TenantAdminMixin(TenantScopedAdminMixin):
    """Rows of the tenants the staff user administers; the role grants the rights."""

    def has_module_permission(self, request):
        return super().has_module_permission(request) or is_tenant_admin(request.user)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or is_tenant_admin(request.user)

    def has_add_permission(self, request):
        return super().has_add_permission(request) or is_tenant_admin(request.user)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) or is_tenant_admin(request.user)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) or is_tenant_admin(request.user)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if not request.user.is_superuser and self.tenant_field in form.base_fields:
            # Global rows (tenant empty) are the operators'.
            form.base_fields[self.tenant_field].required = True
        return form


class ReadOnlyAdminMixin:
    """History and ledger are written by the engine, never by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def tenant_or_global(obj) -> str:
    return obj.tenant.slug if obj.tenant_id else "— global —"


# --- rules ---------------------------------------------------------------------------------


class AlertRuleForm(forms.ModelForm):
    """Validates the query with the datasource itself, so a bad query never gets saved."""

    runbook_url = forms.URLField(
        max_length=500, required=False, assume_scheme="https", label="Runbook URL"
    )

    class Meta:
        model = AlertRule
        fields = [
            "tenant",
            "name",
            "severity",
            "enabled",
            "description",
            "runbook_url",
            "datasource",
            "query",
            "condition_operator",
            "threshold",
            "for_duration",
            "keep_firing_for",
            "cooldown",
            "evaluation_interval",
            "channels",
            "labels",
            "annotations",
        ]

    def clean_name(self):
        name = (self.cleaned_data.get("name") or "").strip()
        if name.isdigit():
            raise ValidationError("A name cannot be a number (it reads as an id).")
        if "/" in name:
            raise ValidationError("A name cannot contain '/'.")
        return name

    def clean_labels(self):
        labels = self.cleaned_data.get("labels") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and LABEL_NAME.match(k) and isinstance(v, str)
            for k, v in labels.items()
        ):
            raise ValidationError('Labels are an object of label names to strings: {"team": "db"}.')
        return labels

    def clean_annotations(self):
        from .templating import validate_template

        annotations = self.cleaned_data.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ValidationError('Annotations are an object: {"summary": "..."}.')
        errors = []
        for name, text in annotations.items():
            if not isinstance(text, str):
                errors.append(f"{name}: must be a string template")
                continue
            try:
                validate_template(text)
            except ValidationError as exc:
                errors.extend(f"{name}: {message}" for message in exc.messages)
        if errors:
            raise ValidationError(errors)
        return annotations

    def clean(self):
        cleaned = super().clean()
        tenant = cleaned.get("tenant")
        datasource = cleaned.get("datasource")
        query = (cleaned.get("query") or "").strip()
        if datasource and datasource != Datasource.EXTERNAL and query:
            from .evaluation import get_datasource
            from .evaluation.base import QueryError

            try:
                get_datasource(datasource).validate(query, global_rule=tenant is None)
            except QueryError as exc:
                self.add_error("query", str(exc))
        foreign = [
            c.name
            for c in cleaned.get("channels") or []
            if c.tenant_id is not None and c.tenant_id != getattr(tenant, "pk", None)
        ]
        if foreign:
            self.add_error(
                "channels",
                "A rule pages its own tenant's channels or global ones, not " + ", ".join(foreign),
            )
        return cleaned


class CurrentInstanceInline(admin.TabularInline):
    """The rule's current alerts (pending, firing, flapping, no data, error)."""

    model = AlertInstance
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "current alerts"
    fields = ["state", "labels", "value", "firing_since", "last_evaluated_at", "acknowledged_by"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).filter(state__in=CURRENT_STATES)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return True  # the rule's admin already decided who sees the rule


@admin.register(AlertRule)
class AlertRuleAdmin(TenantAdminMixin, admin.ModelAdmin):
    form = AlertRuleForm
    list_display = [
        "name",
        "tenant_display",
        "severity",
        "datasource",
        "enabled",
        "health",
        "current_alerts",
        "last_evaluated_at",
    ]
    list_filter = [TENANT_FILTER, "severity", "datasource", "enabled", "health"]
    search_fields = ["name", "description", "query"]
    readonly_fields = [
        "health",
        "last_error",
        "last_evaluated_at",
        "next_evaluation_at",
        "builtin",
        "created_by",
        "created_at",
        "updated_at",
    ]
    filter_horizontal = ["channels"]
    inlines = [CurrentInstanceInline]
    actions = ["enable_rules", "disable_rules", "test_fire", "silence_one_hour"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "severity", "enabled", "description", "runbook_url"]}),
        (
            "Query and condition",
            {
                "fields": [
                    "datasource",
                    "query",
                    "condition_operator",
                    "threshold",
                    "for_duration",
                    "keep_firing_for",
                    "cooldown",
                    "evaluation_interval",
                ]
            },
        ),
        ("Notifications", {"fields": ["channels", "labels", "annotations"]}),
        ("State", {"fields": readonly_fields}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("tenant")
            .annotate(_current=Count("instances", filter=Q(instances__state__in=CURRENT_STATES)))
        )

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_display(self, rule):
        return tenant_or_global(rule)

    @admin.display(description="current alerts", ordering="_current")
    def current_alerts(self, rule):
        return rule._current

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "channels" and not request.user.is_superuser:
            kwargs["queryset"] = NotificationChannel.objects.filter(
                Q(tenant__in=administered_tenants(request.user)) | Q(tenant__isnull=True)
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable selected rules")
    def enable_rules(self, request, queryset):
        for rule in queryset:
            rule_actions.set_enabled(rule, True, request=request)
        messages.success(request, f"{queryset.count()} rule(s) enabled.")

    @admin.action(description="Disable selected rules")
    def disable_rules(self, request, queryset):
        for rule in queryset:
            rule_actions.set_enabled(rule, False, request=request)
        messages.success(request, f"{queryset.count()} rule(s) disabled.")

    @admin.action(description="Test fire selected rules (sends [TEST] notifications)")
    def test_fire(self, request, queryset):
        from tenants import audit

        from .choices import AuditAction

        for rule in queryset:
            result = testfire.fire_test(
                rule,
                {"value": testfire.satisfying_value(rule)},
                tenant=rule.tenant,
                actor=request.user.get_username(),
                operator=request.user.is_superuser,
            )
            audit.record(
                AuditAction.RULE_TEST_FIRED,
                request=request,
                tenant=rule.tenant,
                rule=rule.name,
                dry_run=False,
                sent=result.sent,
                condition_met=result.condition_met,
            )
            if not result.notifications:
                messages.warning(request, f"{rule.name}: test recorded, but no channel to send to.")
                continue
            channels = ", ".join(item.channel.name for item in result.notifications)
            messages.success(request, f"{rule.name}: [TEST] notification queued for {channels}.")

    @admin.action(description="Silence selected rules for 1 hour")
    def silence_one_hour(self, request, queryset):
        for rule in queryset:
            rule_actions.silence_rule(rule, SILENCE_FOR, user=request.user, request=request)
        messages.success(request, f"{queryset.count()} rule(s) silenced for 1 hour.")


# --- channels --------------------------------------------------------------------------------


class NotificationChannelForm(forms.ModelForm):
    """Shows secrets masked; a secret left masked (or removed) keeps its stored value."""

    class Meta:
        model = NotificationChannel
        fields = [
            "tenant",
            "name",
            "type",
            "config",
            "enabled",
            "send_resolved",
            "is_fallback",
        ]
        help_texts = {
            "config": 'email: {"to": [...]}; slack: {"webhook_url": ...}; pagerduty: '
            '{"routing_key": ..., "api_url": ...}; webhook: {"url": ..., "secret": ...}. '
            f"Secrets show as {channel_config.MASK}: leave them so to keep them.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["config"] = channel_config.masked_config(
                self.instance.type, self.instance.config
            )

    def clean(self):
        cleaned = super().clean()
        channel_type = cleaned.get("type")
        if channel_type and "config" in cleaned:
            old = self.instance if self.instance.pk else None
            try:
                cleaned["config"] = channel_config.merge_and_validate(
                    channel_type,
                    cleaned["config"],
                    old.config if old else None,
                    old.type if old else None,
                )
            except ValidationError as exc:
                messages_ = (
                    [f"{k}: {m}" for k, ms in exc.message_dict.items() for m in ms]
                    if hasattr(exc, "error_dict")
                    else exc.messages
                )
                self.add_error("config", messages_)
        return cleaned


@admin.register(NotificationChannel)
class NotificationChannelAdmin(TenantAdminMixin, admin.ModelAdmin):
    form = NotificationChannelForm
    list_display = [
        "name",
        "tenant_display",
        "type",
        "enabled",
        "is_fallback",
        "masked",
        "broken_at",
        "last_success_at",
    ]
    list_filter = [TENANT_FILTER, "type", "enabled", "is_fallback"]
    search_fields = ["name"]
    readonly_fields = ["broken_at", "last_error", "last_error_at", "last_success_at"]
    actions = ["send_test"]

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_display(self, channel):
        return tenant_or_global(channel)

    @admin.display(description="config")
    def masked(self, channel):
        shown = channel_config.masked_config(channel.type, channel.config)
        return format_html("<code>{}</code>", ", ".join(f"{k}={v}" for k, v in shown.items()))

    @admin.action(description="Send a test message")
    def send_test(self, request, queryset):
        for channel in queryset:
            result = send_channel_test(
                channel, tenant=channel.tenant, actor=request.user.get_username()
            )
            if result.status == "sent":
                messages.success(request, f"{channel.name}: test message sent.")
            else:
                messages.error(request, f"{channel.name}: test failed: {result.error}")


# --- silences --------------------------------------------------------------------------------


class SilenceForm(forms.ModelForm):
    class Meta:
        model = Silence
        fields = ["tenant", "matchers", "starts_at", "ends_at", "comment"]
        help_texts = {
            "matchers": 'A list of {"name", "op" (=, !=, =~, !~), "value"}: '
            '[{"name": "alertname", "op": "=", "value": "traversion_api_down"}]',
        }

    def clean_matchers(self):
        return validate_matchers(self.cleaned_data.get("matchers"))

    def clean(self):
        cleaned = super().clean()
        starts, ends = cleaned.get("starts_at"), cleaned.get("ends_at")
        if starts and ends and ends <= starts:
            self.add_error("ends_at", "Must be after the start.")
        return cleaned


@admin.register(Silence)
class SilenceAdmin(TenantAdminMixin, admin.ModelAdmin):
    form = SilenceForm
    list_display = ["__str__", "tenant_display", "starts_at", "ends_at", "comment", "created_by"]
    list_filter = [TENANT_FILTER]
    search_fields = ["comment"]
    actions = ["expire_now"]

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_display(self, silence):
        return tenant_or_global(silence)

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Expire selected silences now")
    def expire_now(self, request, queryset):
        from .services import expire_silence

        expired = 0
        for silence in queryset:
            try:
                expire_silence(silence, request.user, request=request)
                expired += 1
            except ValidationError as exc:
                messages.warning(request, f"{silence}: {' '.join(exc.messages)}")
        messages.success(request, f"{expired} silence(s) expired.")


# --- instances, history, ledger (read-only) ---------------------------------------------------


@admin.register(AlertInstance)
class AlertInstanceAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["rule", "tenant_display", "state", "labels", "value", "firing_since"]
    list_filter = ["state", "rule__severity", TENANT_FILTER]
    search_fields = ["rule__name", "fingerprint"]
    list_select_related = ["rule", "tenant"]

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_display(self, instance):
        return tenant_or_global(instance)


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """The firing history."""

    list_display = [
        "timestamp",
        "rule",
        "tenant_display",
        "kind",
        "from_state",
        "to_state",
        "value",
        "is_test",
    ]
    list_filter = ["kind", "to_state", "is_test", TENANT_FILTER]
    search_fields = ["rule__name", "message"]
    date_hierarchy = "timestamp"
    list_select_related = ["rule", "tenant"]

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_display(self, event):
        return tenant_or_global(event)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """The delivery ledger."""

    list_display = [
        "created_at",
        "rule_name",
        "channel",
        "kind",
        "status",
        "is_test",
        "attempts",
        "sent_at",
        "last_error",
    ]
    list_filter = ["status", "kind", "is_test", "channel__type", TENANT_FILTER]
    search_fields = ["event__rule__name", "channel__name", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["event__rule", "channel"]

    @admin.display(description="rule", ordering="event__rule__name")
    def rule_name(self, row):
        return row.event.rule.name
