"""`manage.py push_dashboards [--tenant SLUG | --all-tenants]`: send dashboards to Grafana."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboards import library
from dashboards.grafana_api import GrafanaClient, GrafanaError
from metrics.labels import tenant_label
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Push dashboards to Grafana (POST /api/dashboards/db at GRAFANA_URL with GRAFANA_TOKEN, "
        "overwriting by uid, so it is safe to run again). Without options: the three shared "
        "dashboards. --tenant SLUG: that tenant's dashboard (the overview's tenant-scoped "
        "panels with the tenant fixed, uid traversion-tenant-<slug>, title 'Tenant <name> Dashboard'). "
        "--all-tenants: every active tenant's."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--tenant", metavar="SLUG", help="Push this tenant's dashboard.")
        which.add_argument(
            "--all-tenants", action="store_true", help="Push a dashboard for every active tenant."
        )
        parser.add_argument(
            "--folder-uid", default="", help="Grafana folder uid (default: General)."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print the dashboards as JSON instead of sending them.",
        )

    def handle(self, tenant, all_tenants, folder_uid, dry_run, **options):
        dashboards = self.select(tenant, all_tenants)
        if dry_run:
            self.stdout.write(json.dumps(dashboards, indent=2))
            return
        if not settings.GRAFANA_URL:
            raise CommandError("GRAFANA_URL is not set")
        client = GrafanaClient(settings.GRAFANA_URL, settings.GRAFANA_TOKEN)
        for dashboard in dashboards:
            try:
                answer = client.push(
                    dashboard, folder_uid=folder_uid or None, message="manage.py push_dashboards"
                )
            except GrafanaError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(
                f"pushed {dashboard['uid']} ({dashboard['title']}) "
                f"version {answer.get('version', '?')}: {answer.get('url', '')}"
            )

    def select(self, slug: str | None, all_tenants: bool) -> list[dict]:
        if slug is None and not all_tenants:
            return list(library.load_all().values())
        overview = library.load(library.OVERVIEW_UID)
        if slug is not None:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                raise CommandError(f"no tenant {slug!r}")
            tenants = [tenant]
        else:
            tenants = list(Tenant.objects.filter(is_active=True).order_by("slug"))
            if not tenants:
                raise CommandError("there are no active tenants")
        return [
            library.render_for_tenant(overview, label=tenant_label(t), slug=t.slug, name=t.name)
            for t in tenants
        ]
