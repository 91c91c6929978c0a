"""Rebuild every tenant's event usage totals (events, bytes, links, newest event)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from events.usage import recompute_usage


class Command(BaseCommand):
    help = (
        "Recompute EventUsage (quota accounting and storage gauges) from the event and link "
        "tables, e.g. after rows were deleted outside the API and retention."
    )

    def handle(self, *args, **options):
        for tenant, before, after in recompute_usage():
            if before != after:
                self.stdout.write(f"{tenant.slug}: {before} -> {after}")
        self.stdout.write(self.style.SUCCESS("event usage recomputed"))
