"""`manage.py load_default_rules`: the default rule pack (alerts/rulepack.py), idempotently.

What belongs to whom, so that running it again (every `make run` does) never undoes an
operator's choices:

- The pack owns each built-in rule's *definition*: severity, description, runbook URL,
  datasource, query, condition, `for`, interval, labels and annotation templates. A rerun
  brings them back to the pack's (a newer release's improvements arrive this way).
- The operator owns `enabled`, `channels` and `cooldown`: set when a rule is created
  (enabled, on every enabled global channel), never touched afterwards.
- A global rule with a pack name that was not created by the pack is left alone.

It first creates or updates the global default channels from `.env` (SLACK_WEBHOOK,
PAGERDUTY_KEY, ALERT_TO_EMAIL).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from alerts.models import AlertRule, NotificationChannel
from alerts.rulepack import PACK


class Command(BaseCommand):
    help = "Create or update the default alert rules (idempotent)."

    def handle(self, *args, **options):
        from alerts.channels.defaults import ensure_default_channels

        channels = ensure_default_channels()
        for name, outcome in sorted(channels.items()):
            self.stdout.write(f"channel {name}: {outcome}")
        counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped": 0}
        with transaction.atomic():
            defaults = list(
                NotificationChannel.objects.filter(
                    tenant__isnull=True, enabled=True, is_fallback=False
                )
            )
            for pack_rule in PACK:
                outcome = self.load(pack_rule, defaults)
                counts[outcome] += 1
                if outcome != "unchanged":
                    self.stdout.write(f"rule {pack_rule.name}: {outcome}")
        self.stdout.write(
            self.style.SUCCESS(
                "default rules: " + ", ".join(f"{n} {what}" for what, n in counts.items())
            )
        )

    def load(self, pack_rule, channels) -> str:
        fields = pack_rule.fields()
        rule = AlertRule.objects.filter(tenant__isnull=True, name=pack_rule.name).first()
        if rule is not None and not rule.builtin:
            self.stderr.write(
                f"rule {pack_rule.name}: a global rule of that name exists and is not "
                "built in; left as it is"
            )
            return "skipped"
        created = rule is None
        if created:
            rule = AlertRule(tenant=None, name=pack_rule.name, builtin=True, enabled=True)
        elif all(getattr(rule, key) == value for key, value in fields.items()):
            return "unchanged"
        for key, value in fields.items():
            setattr(rule, key, value)
        try:
            rule.full_clean(exclude=["channels"])
        except ValidationError as exc:
            raise CommandError(f"rule {pack_rule.name} of the pack is invalid: {exc}") from exc
        rule.save()
        if created:
            rule.channels.set(channels)
            return "created"
        return "updated"
