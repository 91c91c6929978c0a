from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug

from tenants import audit
from tenants.choices import AuditAction
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Create a tenant (idempotent: an existing slug is reported, and renamed if --name differs)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default=None, help="Display name (defaults to the slug).")
        parser.add_argument("--quota-bytes", type=int, default=None, help="Storage quota in bytes.")

    def handle(self, slug: str, name: str | None, quota_bytes: int | None, **options):
        try:
            validate_slug(slug)
        except ValidationError as exc:
            raise CommandError(f"invalid slug {slug!r}: letters, digits, '-' and '_' only") from exc
        if len(slug) > 63:
            raise CommandError(f"invalid slug {slug!r}: at most 63 characters")
        if name is not None and not name.strip():
            raise CommandError("--name must not be empty")
        if quota_bytes is not None and quota_bytes < 0:
            raise CommandError("--quota-bytes must be >= 0")
        tenant, created = Tenant.objects.get_or_create(slug=slug, defaults={"name": name or slug})
        changed = []
        if not created and name and tenant.name != name:
            tenant.name = name
            changed.append("name")
        if quota_bytes is not None and tenant.storage_quota_bytes != quota_bytes:
            tenant.storage_quota_bytes = quota_bytes
            changed.append("storage_quota_bytes")
        if changed:
            tenant.save(update_fields=changed)
        if created:
            audit.record(AuditAction.TENANT_CREATED, tenant=tenant, actor="manage.py")
            self.stdout.write(self.style.SUCCESS(f"Created tenant {tenant.slug} ({tenant.name})"))
        elif changed:
            audit.record(
                AuditAction.TENANT_UPDATED, tenant=tenant, actor="manage.py", fields=changed
            )
            self.stdout.write(f"Tenant {tenant.slug} exists; updated {', '.join(changed)}")
        else:
            self.stdout.write(f"Tenant {tenant.slug} exists; nothing to change")
