"""Sending a ledger row again on request (`POST /api/v1/notifications/{id}/resend`).

Only rows that did not reach anyone are sent again: `failed`, or suppressed by a silence
or by the cooldown. The row goes back to `queued` and its group is scheduled through the
normal delivery path (alerts.delivery), so the claim, the retries and the ledger work as
for any notification: `attempts` starts again from 0 (the note in `last_error` keeps how
many there were), so a resend gets ALERT_DELIVERY_MAX_ATTEMPTS attempts of its own. A
sent row is never sent twice.
"""

from __future__ import annotations

from django.db import transaction

from .choices import NotificationStatus
from .models import Notification

RESENDABLE = (
    NotificationStatus.FAILED,
    NotificationStatus.SUPPRESSED_SILENCE,
    NotificationStatus.SUPPRESSED_COOLDOWN,
)
LAST_ERROR_LIMIT = 2000


class ResendRefused(Exception):
    """The row is not in a state that can be sent again (the message says why)."""


def resend(row: Notification) -> None:
    """Queue `row` for delivery again, or raise ResendRefused."""
    from .delivery import schedule

    with transaction.atomic():
        tried = f" after {row.attempts} attempts" if row.attempts else ""
        note = f"resent on request; was {row.status}{tried}" + (
            f": {row.last_error}" if row.last_error else ""
        )
        # A fresh retry budget: a row that failed after its last attempt would otherwise
        # be given up at the first error of the resend. The note keeps the old count.
        updated = Notification.objects.filter(pk=row.pk, status__in=RESENDABLE).update(
            status=NotificationStatus.QUEUED,
            next_attempt_at=None,
            attempts=0,
            last_error=note[:LAST_ERROR_LIMIT],
        )
        if not updated:
            row.refresh_from_db(fields=["status"])
            raise ResendRefused(
                f"This notification is {row.status}; only failed or suppressed "
                "notifications are sent again."
            )
        schedule(row.group_key)
