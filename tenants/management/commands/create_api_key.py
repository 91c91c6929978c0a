from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tenants import audit
from tenants.choices import AuditAction, Role
from tenants.models import ApiKey, Tenant


class Command(BaseCommand):
    help = (
        "Issue an API key for a tenant and print it once. An active key with the same name "
        "is an error unless --rotate, which revokes it and issues a new one."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="Tenant slug")
        parser.add_argument("--name", default="default", help="Key name, unique among active keys")
        parser.add_argument("--role", default=Role.MEMBER, choices=[r.value for r in Role])
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke an active key of that name first"
        )
        parser.add_argument("--quiet", action="store_true", help="Print only the key")

    def handle(self, slug: str, name: str, role: str, rotate: bool, quiet: bool, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(
                f"no tenant {slug!r} (create it with: manage.py create_tenant {slug})"
            )
        if not name.strip() or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters")
        with transaction.atomic():
            existing = ApiKey.objects.for_tenant(tenant).active().filter(name=name).first()
            if existing is not None:
                if not rotate:
                    raise CommandError(
                        f"tenant {slug} already has an active key named {name!r} "
                        f"(prefix {existing.prefix}); use --rotate to replace it"
                    )
                existing.revoke()
                audit.record(
                    AuditAction.API_KEY_REVOKED,
                    tenant=tenant,
                    actor="manage.py",
                    prefix=existing.prefix,
                    name=name,
                )
            key, raw_key = ApiKey.issue(tenant, name, role=role)
            audit.record(
                AuditAction.API_KEY_CREATED,
                tenant=tenant,
                actor="manage.py",
                prefix=key.prefix,
                name=name,
            )
        if quiet:
            self.stdout.write(raw_key)
        else:
            self.stdout.write(
                f"API key {name!r} for tenant {slug} (role {role}); shown once, store it now:"
            )
            self.stdout.write(raw_key)
