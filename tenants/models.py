"""Tenants, who belongs to them, how machines authenticate to them, and what happened."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from .choices import API_KEY_PREFIX, DEFAULT_STORAGE_QUOTA_BYTES, ROLE_RANK, Role
from .scoping import TenantScopedQuerySet


class Tenant(models.Model):
    """One customer of the platform. Every tenant-scoped row points at one."""

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    storage_quota_bytes = models.BigIntegerField(
        default=DEFAULT_STORAGE_QUOTA_BYTES, validators=[MinValueValidator(0)]
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class MembershipQuerySet(TenantScopedQuerySet):
    pass


class Membership(models.Model):
    """A user's role in a tenant: owner > admin > member > viewer."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.role}"

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(minimum)]


class InvalidApiKey(Exception):
    """The presented key is malformed, unknown or revoked (the message says which)."""


def _hash_key(raw_key: str) -> str:
    # Keys carry 256 bits of randomness, so a plain SHA-256 is enough: there is nothing
    # to brute-force, and no salt is needed to defeat precomputed tables.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(TenantScopedQuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A tenant's machine credential. Only its SHA-256 is stored; the key is shown once.

    Format: `trv_<prefix>_<secret>`. The prefix identifies the key in lists and logs.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="api_key_unique_active_name",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({API_KEY_PREFIX}_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, tenant: Tenant, name: str, *, role: str = Role.MEMBER, created_by=None):
        """Create a key; returns (ApiKey, raw_key). The raw key is not kept anywhere."""
        prefix = secrets.token_hex(4)
        raw_key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        key = cls.objects.create(
            tenant=tenant,
            name=name,
            prefix=prefix,
            key_hash=_hash_key(raw_key),
            role=role,
            created_by=created_by,
        )
        return key, raw_key

    @classmethod
    def authenticate(cls, raw_key: str) -> ApiKey:
        parts = raw_key.split("_", 2)
        if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
            raise InvalidApiKey("malformed API key")
        key = cls.objects.select_related("tenant").filter(prefix=parts[1]).first()
        if key is None or not hmac.compare_digest(key.key_hash, _hash_key(raw_key)):
            raise InvalidApiKey("unknown API key")
        if not key.is_active:
            raise InvalidApiKey("revoked API key")
        if not key.tenant.is_active:
            raise InvalidApiKey("tenant is deactivated")
        key.touch()
        return key

    def touch(self) -> None:
        """Record use, at most once a minute per key (a write per request is waste)."""
        now = timezone.now()
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() >= 60:
            ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now

    def revoke(self) -> bool:
        """Revoke once; returns False when it already was."""
        updated = ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        self.refresh_from_db(fields=["revoked_at"])
        return bool(updated)


class AuditEventQuerySet(TenantScopedQuerySet):
    pass


class AuditEvent(models.Model):
    """Something security-relevant that happened. Append-only.

    Authentication attempts are audit events with action `auth.login` and their
    method and result in their own columns (the `auth_attempts` view reads them).
    """

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_events"
    )
    timestamp = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    method = models.CharField(max_length=16, blank=True)
    result = models.CharField(max_length=16, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp"]
        indexes = [
            models.Index(fields=["tenant", "timestamp"], name="audit_tenant_time"),
            models.Index(fields=["action", "timestamp"], name="audit_action_time"),
        ]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.action} {self.actor}"
