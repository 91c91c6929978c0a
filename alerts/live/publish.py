"""Board messages: what an instance looks like on the live board, and who is told.

Contract. Every board message, on the socket and in `snapshot.json`, describes an
instance with `instance_payload()`:

    {"id", "rule_id", "rule", "severity", "state", "on_board", "value", "labels",
     "summary", "started_at", "pending_since", "firing_since", "last_state_change_at",
     "acknowledged", "acknowledged_by", "acknowledged_at", "ack_comment",
     "silenced", "silence_id", "silenced_until", "runbook_url"}

and carries `as_of`, the time its rows were read (ISO 8601): a client keeps, per
instance, the newest reading it has seen, so a late push never undoes a fresher snapshot.

Publishing. A post_save of an AlertInstance (or a change of a Silence, which changes the
`silenced` flag of the instances it matches) schedules, on commit, a read of the
committed row and a `group_send` to the group of its tenant, `tenant-<id>`. Before any
of that work it checks that somebody listens (`has_listeners`), so evaluation ticks of a
tenant with no board open cost one cache read per change and no query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from ..choices import ACTIVE_STATES, InstanceState, Severity
from ..dispatch import routing_labels
from ..models import AlertInstance, Silence
from ..silences import active_silences, matches

logger = logging.getLogger(__name__)

#: Board sections, most urgent first.
SEVERITY_ORDER: tuple[str, ...] = (
    Severity.CRITICAL,
    Severity.SECURITY,
    Severity.WARNING,
    Severity.INFO,
)
#: Channel-layer message types (handled by LiveBoardConsumer.board_instance / board_removed).
LAYER_INSTANCE = "board.instance"
LAYER_REMOVED = "board.removed"
#: Fields whose change is visible on the board; a save limited to other fields (say,
#: last_evaluated_at on every tick) publishes nothing.
BOARD_FIELDS = frozenset(
    {
        "state",
        "value",
        "labels",
        "annotations",
        "tenant",
        "pending_since",
        "firing_since",
        "last_state_change_at",
        "acknowledged_by",
        "acknowledged_at",
        "ack_comment",
    }
)
#: A socket marks its tenant as watched in the shared cache for this long and refreshes
#: the mark well before it lapses (see LiveBoardConsumer).
LISTENER_TTL_SECONDS = 90
LISTENER_REFRESH_SECONDS = 30


def group_name(tenant_id: int) -> str:
    return f"tenant-{tenant_id}"


def listener_key(tenant_id: int) -> str:
    return f"live-board:listening:{tenant_id}"


def layer_is_shared(layer=None) -> bool:
    """Whether the channel layer reaches other processes (Redis) or only this one."""
    layer = layer if layer is not None else get_channel_layer()
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


def has_listeners(tenant_id: int, layer=None) -> bool:
    """Whether a board of this tenant is open where this process's messages can reach it.

    The in-memory layer knows its own groups (and a publisher in another process, a
    Celery worker in the embedded default, rightly finds none there: the boards poll).
    With a shared layer, open sockets keep a mark in the shared cache.
    """
    layer = layer if layer is not None else get_channel_layer()
    if layer is None:
        return False
    if isinstance(layer, InMemoryChannelLayer):
        return bool(layer.groups.get(group_name(tenant_id)))
    return cache.get(listener_key(tenant_id)) is not None


def mark_listening(tenant_id: int) -> None:
    cache.set(listener_key(tenant_id), 1, timeout=LISTENER_TTL_SECONDS)


def now_iso() -> str:
    """The `as_of` of a reading: UTC, always with microseconds, so strings sort by time."""
    return timezone.now().isoformat(timespec="microseconds")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def instance_payload(instance: AlertInstance, silences: Iterable[Silence]) -> dict:
    """The board's view of one instance (see the module docstring for the contract).

    `silences` are the active silences of the instance's tenant (and the global ones);
    an instance is silenced when one of them matches its routing labels, exactly as
    the notification dispatcher decides.
    """
    labels = routing_labels(instance)
    silence = next((s for s in silences if matches(s.matchers, labels)), None)
    if instance.state == InstanceState.PENDING:
        started = instance.pending_since
    else:
        started = instance.firing_since or instance.pending_since
    started = started or instance.last_state_change_at or instance.created_at
    annotations = instance.annotations if isinstance(instance.annotations, dict) else {}
    user = instance.acknowledged_by
    return {
        "id": instance.pk,
        "rule_id": instance.rule_id,
        "rule": instance.rule.name,
        "severity": instance.rule.severity,
        "state": instance.state,
        "on_board": instance.state in ACTIVE_STATES,
        "value": instance.value,
        "labels": instance.labels,
        "summary": str(annotations.get("summary", "")),
        "started_at": _iso(started),
        "pending_since": _iso(instance.pending_since),
        "firing_since": _iso(instance.firing_since),
        "last_state_change_at": _iso(instance.last_state_change_at),
        "acknowledged": instance.acknowledged_at is not None,
        "acknowledged_by": user.get_username() if user is not None else "",
        "acknowledged_at": _iso(instance.acknowledged_at),
        "ack_comment": instance.ack_comment,
        "silenced": silence is not None,
        "silence_id": silence.pk if silence is not None else None,
        "silenced_until": _iso(silence.ends_at) if silence is not None else None,
        "runbook_url": instance.rule.runbook_url,
    }


def _instances():
    return AlertInstance.objects.select_related("rule", "tenant", "acknowledged_by")


def _sort_key(payload: dict) -> tuple:
    severity = payload["severity"]
    rank = SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)
    state_rank = {InstanceState.FIRING: 0, InstanceState.FLAPPING: 1}.get(payload["state"], 2)
    return (rank, payload["acknowledged"], state_rank, payload["started_at"] or "", payload["id"])


def board_payloads(tenant) -> dict[int, dict]:
    """Every instance of the tenant (a Tenant or its id) that belongs on the board, by id."""
    silences = list(active_silences(tenant))
    queryset = _instances().for_tenant(tenant).filter(state__in=ACTIVE_STATES)
    return {instance.pk: instance_payload(instance, silences) for instance in queryset}


def board_snapshot(tenant) -> dict:
    """The whole board of a tenant: what snapshot.json answers."""
    as_of = now_iso()  # taken before the read, so pushes read later win ties
    instances = sorted(board_payloads(tenant).values(), key=_sort_key)
    return {
        "tenant": {"slug": tenant.slug, "name": tenant.name},
        "as_of": as_of,
        "severities": list(SEVERITY_ORDER),
        "instances": instances,
    }


def payloads_of(tenant, ids: Iterable[int]) -> dict[int, dict | None]:
    """Current payloads of some instances of the tenant, None for those gone from it."""
    ids = list(ids)
    silences = list(active_silences(tenant))
    found = {
        instance.pk: instance_payload(instance, silences)
        for instance in _instances().for_tenant(tenant).filter(pk__in=ids)
    }
    return {pk: found.get(pk) for pk in ids}


def publish(tenant_id: int, instance_ids: Iterable[int] | None = None) -> int:
    """Send the current state of instances to the tenant's board group; returns messages sent.

    `instance_ids=None` republishes the tenant's whole board (after a silence changed).
    An id that no longer exists is sent as a removal. Does nothing, and reads nothing,
    when no board of the tenant listens. Meant to run after a commit (the receivers
    below, the engine's bulk writes); it never raises into its caller: a failure is
    logged, and a board that lost its connection reloads its snapshot on reconnect.
    """
    try:
        return _publish(tenant_id, instance_ids)
    except Exception:
        logger.exception("live board: publishing to tenant %s failed", tenant_id)
        return 0


def _publish(tenant_id: int, instance_ids: Iterable[int] | None) -> int:
    layer = get_channel_layer()
    if not has_listeners(tenant_id, layer):
        return 0
    as_of = now_iso()
    if instance_ids is None:
        current: dict[int, dict | None] = dict(board_payloads(tenant_id))
    else:
        current = payloads_of(tenant_id, instance_ids)
    messages = [
        {"type": LAYER_REMOVED, "tenant_id": tenant_id, "as_of": as_of, "id": pk}
        if payload is None
        else {"type": LAYER_INSTANCE, "tenant_id": tenant_id, "as_of": as_of, "instance": payload}
        for pk, payload in current.items()
    ]
    # One trip into the event loop for all of them: from sync code each async_to_sync
    # call starts a loop (and a Redis connection) of its own.
    async_to_sync(_send_all)(layer, group_name(tenant_id), messages)
    return len(current)


async def _send_all(layer, group: str, messages: list[dict]) -> None:
    for message in messages:
        await layer.group_send(group, message)


# --- receivers (connected by AlertsConfig.ready() importing this module) --------------


def _on_commit(tenant_id: int | None, instance_ids: list[int] | None, using) -> None:
    """Publish after the transaction commits (at once outside a transaction)."""

    def publish_committed() -> None:
        if tenant_id is None:
            publish_global_silence_change()
        else:
            publish(tenant_id, instance_ids)

    transaction.on_commit(publish_committed, using=using)


@receiver(post_save, sender=AlertInstance, dispatch_uid="alerts.live.instance_saved")
def instance_saved(sender, instance, raw=False, using=None, update_fields=None, **kwargs):
    if raw or instance.tenant_id is None:
        return
    if update_fields is not None and not BOARD_FIELDS.intersection(update_fields):
        return
    _on_commit(instance.tenant_id, [instance.pk], using)


@receiver(post_delete, sender=AlertInstance, dispatch_uid="alerts.live.instance_deleted")
def instance_deleted(sender, instance, using=None, **kwargs):
    if instance.tenant_id is not None:
        _on_commit(instance.tenant_id, [instance.pk], using)


@receiver(post_save, sender=Silence, dispatch_uid="alerts.live.silence_saved")
@receiver(post_delete, sender=Silence, dispatch_uid="alerts.live.silence_deleted")
def silence_changed(sender, instance, raw=False, using=None, **kwargs):
    if raw:
        return
    # A tenant's silence changes that tenant's board; a global one (tenant None) any board.
    _on_commit(instance.tenant_id, None, using)


def publish_global_silence_change() -> None:
    """A global silence can change any tenant's board: republish those with an open board."""
    try:
        tenant_ids = list(
            AlertInstance.objects.filter(state__in=ACTIVE_STATES, tenant__isnull=False)
            .values_list("tenant_id", flat=True)
            .distinct()
        )
    except Exception:  # after the commit: never into the caller (see publish)
        logger.exception("live board: could not list the boards a global silence changes")
        return
    for tenant_id in tenant_ids:
        publish(tenant_id)
