"""Delivery: the one place where ledger rows become messages at a provider.

`deliver_group(group_key)` is the entry point (the Celery task "alerts.deliver_group" is a
thin wrapper around it):

1. Claim: the group's due `queued` rows become `sending` in one conditional UPDATE
   (rows locked with SKIP LOCKED, the row count checked), with `attempts + 1` and
   `claimed_at`, committed *before* the provider is called. Two workers never send the
   same row, and a worker that dies mid-send leaves a visible `sending` row behind.
2. One AlertMessage for the claimed rows, one call of the channel's transport, timed.
3. Record, on every row of the group: `sent` on the carrier row and `grouped` (with
   `delivered_with`) on the others; or back to `queued` with `next_attempt_at`
   (retryable error: exponential backoff with jitter, never earlier than Retry-After);
   or `failed` (permanent error, or no attempts left). The channel keeps its last error
   and last success; a permanent error marks it broken. Failed rows are re-routed to the
   tenant's fallback channel (new ledger rows with `fallback_for`).

`recover_deliveries()` (beat, every ALERT_DELIVERY_RECOVERY_SECONDS) takes back rows left
in `sending` longer than ALERT_DELIVERY_LEASE_SECONDS (their worker died: the attempt's
outcome is unknown, so it is sent again, marked as a possible duplicate) and re-enqueues
queued rows whose task was lost. The per-channel guarantee is in docs/alerting.md.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import current_app, shared_task
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from metrics.catalogue import ALERT_NOTIFICATION_DURATION, ALERT_NOTIFICATIONS

from .channels import get_transport
from .channels.base import (
    INTERRUPTED_MARK,
    AlertMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from .choices import DELIVER_GROUP_TASK, NotificationStatus
from .models import Notification, NotificationChannel

logger = logging.getLogger(__name__)

RECOVER_DELIVERIES_TASK = "alerts.recover_deliveries"
LAST_ERROR_LIMIT = 2000


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one call of deliver_group did.

    result: sent | retry | failed | not_due | nothing | cancelled. `retry_in` (seconds)
    is set for retry and not_due: when the group should be looked at again.
    """

    group_key: str
    result: str
    rows: int = 0
    retry_in: float | None = None
    next_attempt_at: datetime | None = None
    error: str = ""
    fallback_group: str | None = None


# --- the entry point ------------------------------------------------------------------------


def deliver_group(group_key: str, *, now: datetime | None = None) -> DeliveryOutcome:
    """Deliver the due queued rows of one group as one message (see the module docstring)."""
    now = now or timezone.now()
    pks = _claim(group_key, now)
    if not pks:
        return _nothing_claimed(group_key, now)
    rows = list(
        Notification.objects.filter(pk__in=pks)
        .select_related("channel", "tenant", "event__rule", "event__instance", "event__tenant")
        .order_by("pk")
    )
    channel = rows[0].channel
    if not channel.enabled:
        _owned(rows).update(
            status=NotificationStatus.FAILED, last_error="channel disabled before delivery"
        )
        _count(channel.type, "cancelled", len(rows))
        return DeliveryOutcome(group_key, "cancelled", len(rows), error="channel disabled")

    started = time.monotonic()
    try:
        transport = get_transport(channel.type)
    except KeyError as exc:  # a type whose transport was removed: nothing can send it
        return _fail_permanently(rows, channel, now, started, str(exc).strip("'\""))
    try:
        message = AlertMessage.from_notifications(rows)
        transport.send(channel, message)
    except RetryableDeliveryError as exc:
        error = f"{INTERRUPTED_MARK} {exc}" if exc.outcome_unknown else str(exc)
        return _retry_or_fail(rows, channel, now, started, error, exc.retry_after)
    except PermanentDeliveryError as exc:
        return _fail_permanently(rows, channel, now, started, str(exc))
    except Exception as exc:  # a bug must not strand the rows in `sending`
        logger.exception("notification group %s: unexpected error in delivery", group_key)
        return _retry_or_fail(
            rows, channel, now, started, f"internal error: {type(exc).__name__}", None
        )
    return _succeed(rows, channel, started)


def _claim(group_key: str, now: datetime) -> list[int]:
    """queued -> sending for the group's due rows; their ids ([] if another worker won)."""
    with transaction.atomic():
        pks = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(group_key=group_key, status=NotificationStatus.QUEUED)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not pks:
            return []
        claimed = Notification.objects.filter(pk__in=pks, status=NotificationStatus.QUEUED).update(
            status=NotificationStatus.SENDING,
            claimed_at=now,
            attempts=F("attempts") + 1,
            next_attempt_at=None,
        )
        if claimed != len(pks):  # cannot happen under the row locks; never send on doubt
            transaction.set_rollback(True)
            logger.warning(
                "notification group %s: claim raced, left to the other worker", group_key
            )
            return []
    return pks


def _nothing_claimed(group_key: str, now: datetime) -> DeliveryOutcome:
    next_due = Notification.objects.filter(
        group_key=group_key, status=NotificationStatus.QUEUED, next_attempt_at__gt=now
    ).aggregate(at=Min("next_attempt_at"))["at"]
    if next_due is not None:
        return DeliveryOutcome(
            group_key,
            "not_due",
            retry_in=(next_due - now).total_seconds(),
            next_attempt_at=next_due,
        )
    return DeliveryOutcome(group_key, "nothing")


def _owned(rows: list[Notification]):
    """The rows still claimed by this attempt (the recovery task may have taken them back)."""
    return Notification.objects.filter(
        pk__in=[r.pk for r in rows],
        status=NotificationStatus.SENDING,
        claimed_at=rows[0].claimed_at,
    )


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def _succeed(
    rows: list[Notification], channel: NotificationChannel, started: float
) -> DeliveryOutcome:
    duration_ms = _elapsed_ms(started)
    sent_at = timezone.now()
    carrier, rest = rows[0], rows[1:]
    with transaction.atomic():
        owned = _owned(rows)
        updated = owned.filter(pk=carrier.pk).update(
            status=NotificationStatus.SENT, sent_at=sent_at, duration_ms=duration_ms
        )
        if rest:
            updated += owned.filter(pk__in=[r.pk for r in rest]).update(
                status=NotificationStatus.GROUPED,
                delivered_with=carrier,
                sent_at=sent_at,
                duration_ms=duration_ms,
            )
        NotificationChannel.objects.filter(pk=channel.pk).update(
            last_success_at=sent_at, broken_at=None
        )
    if updated != len(rows):
        logger.warning(
            "notification group %s: delivered, but %d of %d rows had been taken back "
            "(lease %.0fs too short for this send?)",
            carrier.group_key,
            len(rows) - updated,
            len(rows),
            settings.ALERT_DELIVERY_LEASE_SECONDS,
        )
    _observe(channel.type, duration_ms)
    _count(channel.type, "sent", 1)
    _count(channel.type, "grouped", len(rest))
    logger.info(
        "notification group %s: sent via %s channel %s (%d alerts, attempt %d, %.0f ms)",
        carrier.group_key,
        channel.type,
        channel.pk,
        len(rows),
        carrier.attempts,
        duration_ms,
    )
    return DeliveryOutcome(carrier.group_key, "sent", len(rows))


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with up to 25% jitter; never earlier than the provider's Retry-After."""
    base = settings.ALERT_DELIVERY_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0)
    delay = min(base, settings.ALERT_DELIVERY_BACKOFF_MAX_SECONDS)
    # Jitter spreads the retries of many groups that failed together (a provider outage).
    delay += random.uniform(0, delay * 0.25)
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0, min(retry_after * 0.1, 5.0)))
    return delay


def _retry_or_fail(
    rows: list[Notification],
    channel: NotificationChannel,
    now: datetime,
    started: float,
    error: str,
    retry_after: float | None,
) -> DeliveryOutcome:
    duration_ms = _elapsed_ms(started)
    _observe(channel.type, duration_ms)
    attempts = max(r.attempts for r in rows)
    group_key = rows[0].group_key
    if attempts >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        error = f"gave up after {attempts} attempts: {error}"
        fallback = _fail(rows, channel, duration_ms, error, broken=False)
        return DeliveryOutcome(group_key, "failed", len(rows), error=error, fallback_group=fallback)
    delay = backoff_seconds(attempts, retry_after)
    next_at = now + timedelta(seconds=delay)
    with transaction.atomic():
        _owned(rows).update(
            status=NotificationStatus.QUEUED,
            next_attempt_at=next_at,
            last_error=error[:LAST_ERROR_LIMIT],
            duration_ms=duration_ms,
        )
        _record_channel_error(channel, error)
    _count(channel.type, "retried", 1)
    logger.warning(
        "notification group %s: attempt %d via %s channel %s failed, retry in %.1fs: %s",
        group_key,
        attempts,
        channel.type,
        channel.pk,
        delay,
        error,
    )
    return DeliveryOutcome(
        group_key, "retry", len(rows), retry_in=delay, next_attempt_at=next_at, error=error
    )


def _fail_permanently(
    rows: list[Notification],
    channel: NotificationChannel,
    now: datetime,
    started: float,
    error: str,
) -> DeliveryOutcome:
    duration_ms = _elapsed_ms(started)
    _observe(channel.type, duration_ms)
    error = f"permanent: {error}"
    fallback = _fail(rows, channel, duration_ms, error, broken=True)
    return DeliveryOutcome(
        rows[0].group_key, "failed", len(rows), error=error, fallback_group=fallback
    )


def _fail(
    rows: list[Notification],
    channel: NotificationChannel,
    duration_ms: float | None,
    error: str,
    *,
    broken: bool,
) -> str | None:
    """Mark the rows failed (counted, visible), the channel broken if asked; re-route."""
    with transaction.atomic():
        _owned(rows).update(
            status=NotificationStatus.FAILED,
            last_error=error[:LAST_ERROR_LIMIT],
            duration_ms=duration_ms,
        )
        _record_channel_error(channel, error, broken=broken)
        fallback_group = reroute_to_fallback(rows, channel)
    _count(channel.type, "failed", len(rows))
    logger.error(
        "notification group %s: failed via %s channel %s%s: %s",
        rows[0].group_key,
        channel.type,
        channel.pk,
        f", re-routed as {fallback_group}" if fallback_group else "",
        error,
    )
    return fallback_group


def _record_channel_error(
    channel: NotificationChannel, error: str, *, broken: bool = False
) -> None:
    at = timezone.now()
    fields = {"last_error": error[:LAST_ERROR_LIMIT], "last_error_at": at}
    if broken:
        fields["broken_at"] = at
    NotificationChannel.objects.filter(pk=channel.pk).update(**fields)


# --- fallback ---------------------------------------------------------------------------------


def fallback_channel_for(channel: NotificationChannel) -> NotificationChannel | None:
    """The fallback of the channel's owner (a tenant's, or the global one for a global channel)."""
    return (
        NotificationChannel.objects.filter(
            tenant_id=channel.tenant_id, is_fallback=True, enabled=True
        )
        .exclude(pk=channel.pk)
        .order_by("pk")
        .first()
    )


def reroute_to_fallback(rows: list[Notification], channel: NotificationChannel) -> str | None:
    """New queued ledger rows on the fallback channel (fallback_for = the failed row).

    Not for rows that are themselves a fallback delivery (no loops), and not for an event
    that already has a row on the fallback channel (it gets there already; the ledger
    keeps one row per event and channel). Returns the new group key, if any.
    """
    if any(r.fallback_for_id for r in rows):
        return None
    fallback = fallback_channel_for(channel)
    if fallback is None:
        return None
    group_key = f"{rows[0].group_key}:fallback:{fallback.pk}"
    created = 0
    for row in rows:
        try:
            with transaction.atomic():
                Notification.objects.create(
                    event_id=row.event_id,
                    channel=fallback,
                    tenant_id=row.tenant_id,
                    kind=row.kind,
                    status=NotificationStatus.QUEUED,
                    idempotency_key=hashlib.sha256(
                        f"fallback:{row.pk}:{fallback.pk}".encode()
                    ).hexdigest(),
                    group_key=group_key,
                    fallback_for=row,
                    is_test=row.is_test,
                )
            created += 1
        except IntegrityError:
            logger.info(
                "event %s already has a row on fallback channel %s", row.event_id, fallback.pk
            )
    if not created:
        return None
    schedule(group_key)
    return group_key


# --- recovery -------------------------------------------------------------------------------


def recover_deliveries(*, now: datetime | None = None) -> dict:
    """Take back rows stuck in `sending` past the lease; re-enqueue groups whose task was lost."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.ALERT_DELIVERY_LEASE_SECONDS)
    max_attempts = settings.ALERT_DELIVERY_MAX_ATTEMPTS
    groups: set[str] = set()
    exhausted: list[Notification] = []
    with transaction.atomic():
        stale = list(
            Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=NotificationStatus.SENDING, claimed_at__lt=now - lease)
            .select_related("channel")
            .order_by("pk")
        )
        for row in stale:
            error = (
                f"{INTERRUPTED_MARK} the worker was lost while sending (claimed "
                f"{row.claimed_at.isoformat()}); the provider may have received it, "
                "so it is sent again"
            )
            if row.attempts >= max_attempts:
                exhausted.append(row)
                continue
            Notification.objects.filter(pk=row.pk, status=NotificationStatus.SENDING).update(
                status=NotificationStatus.QUEUED, next_attempt_at=None, last_error=error
            )
            groups.add(row.group_key)
        lost = (
            Notification.objects.filter(status=NotificationStatus.QUEUED)
            .filter(
                Q(next_attempt_at__isnull=True, created_at__lt=now - lease)
                | Q(next_attempt_at__lt=now - lease)
            )
            .order_by()
            .values_list("group_key", flat=True)
            .distinct()
        )
        lost_groups = set(lost) - groups
        groups |= lost_groups
        for group_key in sorted(groups):
            schedule(group_key, countdown=0)
    by_group: dict[str, list[Notification]] = {}
    for row in exhausted:
        by_group.setdefault(row.group_key, []).append(row)
    for rows in by_group.values():
        _fail(
            rows,
            rows[0].channel,
            None,
            f"gave up after {rows[0].attempts} attempts: {INTERRUPTED_MARK} the worker was lost while sending",
            broken=False,
        )
    summary = {
        "interrupted": len(stale) - len(exhausted),
        "exhausted": len(exhausted),
        "lost_groups": len(lost_groups),
        "groups": len(groups),
    }
    if any(summary.values()):
        logger.warning("delivery recovery: %s", summary)
    return summary


# --- helpers ----------------------------------------------------------------------------------


def schedule(group_key: str, countdown: float = 0) -> None:
    """Enqueue delivery of a group once the current transaction commits."""
    transaction.on_commit(
        lambda: current_app.send_task(DELIVER_GROUP_TASK, args=[group_key], countdown=countdown)
    )


def _count(channel_type: str, result: str, amount: int) -> None:
    if amount:
        ALERT_NOTIFICATIONS.labels(channel_type=channel_type, result=result).inc(amount)


def _observe(channel_type: str, duration_ms: float) -> None:
    ALERT_NOTIFICATION_DURATION.labels(channel_type=channel_type).observe(duration_ms / 1000)


# --- Celery -----------------------------------------------------------------------------------


@shared_task(
    name=DELIVER_GROUP_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None
)
def deliver_group_task(self, group_key: str) -> str:
    """Thin wrapper: the ledger counts attempts, Celery only waits between them."""
    outcome = deliver_group(group_key)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    return outcome.result


@shared_task(name=RECOVER_DELIVERIES_TASK, ignore_result=True)
def recover_deliveries_task() -> dict:
    return recover_deliveries()
