from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from tenants.choices import Role
from tenants.models import Membership, Tenant

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = (
        "Create the demo tenant and the `admin` superuser (owner of the demo tenant). The "
        "password is ADMIN_PASSWORD, or generated once and kept in var/admin-password."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, username: str, **options):
        call_command("create_tenant", DEMO_SLUG, name="Demo", stdout=self.stdout)
        tenant = Tenant.objects.get(slug=DEMO_SLUG)
        password = settings.ADMIN_PASSWORD or self.generated_password()
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
        Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.OWNER})
        self.stdout.write(f"Admin user: {username}  password: {password}")

    def generated_password(self) -> str:
        path = Path(settings.VAR_DIR) / "admin-password"
        if path.is_file():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        os.chmod(path, 0o600)
        return password
