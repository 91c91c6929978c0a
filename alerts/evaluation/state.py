"""The alert state machine: results in, transitions out.

One instance per (rule, label set). At each evaluation an instance whose condition holds
moves `inactive/resolved -> pending -> firing` (`for` = 0 goes straight to firing); one
whose condition no longer holds, or that is missing from a complete result, moves
`pending -> inactive` or `firing -> resolved` (after `keep_firing_for`). Besides:

- **nodata**: a rule with a threshold whose result is empty or has no value moves its
  pending/firing instances to `nodata`; **error**: a rule whose query fails moves them to
  `error`, and the rule's health says why. Neither notifies nor resolves: when data is
  back, an instance that was firing continues firing (history only) or resolves
  (notified); one that was not starts over.
- **flapping**: a notifying transition (to firing or resolved) that would be the
  FLAP_THRESHOLD+1-th within FLAP_WINDOW_SECONDS moves the instance to `flapping`
  instead, notified once. While flapping, changes of the condition are only counted;
  once the condition has not changed for a whole window, the instance goes to firing or
  resolved (notified).
- **repeats**: a firing, unacknowledged instance is notified again (`repeat`) every
  `cooldown` ms. Acknowledging stops repeats until the instance resolves. When the last
  alert was suppressed by a silence, the first evaluation that finds no matching silence
  notifies again at once.

Every transition and repeat is an AlertEvent row, and every AlertEvent goes through
`alerts.dispatch.notify` (which writes the ledger rows: queued, suppressed by a silence
or by the cooldown). Silences never change states or history.

`StateMachine` works on a batch of rules inside the caller's transaction; the public
helpers `apply_samples`, `record_error` and `resolve_instance` wrap it for one rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from alerts.choices import (
    FLAP_THRESHOLD,
    FLAP_WINDOW_SECONDS,
    Datasource,
    InstanceState,
    NotificationKind,
    NotificationStatus,
    RuleHealth,
)
from alerts.dispatch import channels_for, notify_many, routing_labels
from alerts.models import AlertEvent, AlertInstance, AlertRule, fingerprint_of
from alerts.silences import active_silences, matches
from alerts.templating import render_annotations
from tenants.models import Tenant

from .base import Sample
from .condition import condition_holds

State = InstanceState
DORMANT_STATES = (State.INACTIVE, State.RESOLVED)
UNKNOWN_STATES = (State.NODATA, State.ERROR)
#: Kinds that count as "alerted" (repeats are scheduled from the last one).
ALERT_KINDS = (NotificationKind.FIRING, NotificationKind.REPEAT, NotificationKind.FLAPPING)
#: What the engine writes on an instance after a transition.
ENGINE_FIELDS = [
    "state",
    "value",
    "labels",
    "annotations",
    "pending_since",
    "firing_since",
    "last_evaluated_at",
    "last_state_change_at",
    "resolved_at",
    "keep_firing_until",
    "last_alert_at",
    "recent_changes",
    "condition_met",
    "notifications_silenced",
    "acknowledged_by",
    "acknowledged_at",
    "ack_comment",
]
#: What changes on an instance at an evaluation without a transition.
VALUE_FIELDS = [
    "value",
    "last_evaluated_at",
    "keep_firing_until",
    "recent_changes",
    "condition_met",
]
BULK_SIZE = 500


def bulk_save(objects: Sequence, fields: Sequence[str]) -> None:
    """UPDATE each object's `fields` by primary key, as one executemany.

    Django's bulk_update builds a CASE expression per field and row and costs
    milliseconds per row; an alert storm updates thousands. executemany sends one
    parameterised statement per row in a pipeline (psycopg) or a loop in C (sqlite3).
    """
    if not objects:
        return
    meta = objects[0]._meta
    columns = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        + ", ".join(f"{quote(column.column)} = %s" for column in columns)
        + f" WHERE {quote(meta.pk.column)} = %s"
    )
    params = [
        [column.get_db_prep_save(getattr(obj, column.attname), connection) for column in columns]
        + [obj.pk]
        for obj in objects
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _parse(value) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


class StateMachine:
    """Applies evaluation results to the instances of a set of rules.

    Use inside a transaction: `load()` locks the rules' rows (so a concurrent push or
    acknowledgement waits) and reads their live instances; `apply()` / `error()` per
    rule; `flush()` writes what changed without a transition in bulk.
    """

    def __init__(self, rules: Iterable[AlertRule], now: datetime | None = None):
        self.now = now or timezone.now()
        self.rules = {rule.pk: rule for rule in rules}
        self.events: list[AlertEvent] = []
        self.instances: dict[int, dict[str, AlertInstance]] = {pk: {} for pk in self.rules}
        self._value_updates: dict[int, AlertInstance] = {}
        self._rule_updates: dict[int, AlertRule] = {}
        self._tenants: dict[int, Tenant] = {}
        self._channels: dict[tuple, list] = {}
        self._silences: dict[int | None, list] = {}
        #: Events recorded but not written yet, in order; instances they changed.
        self._pending: list[AlertEvent] = []
        self._changed: dict[int, AlertInstance] = {}

    # --- loading ---------------------------------------------------------------------

    def load(self) -> StateMachine:
        ids = sorted(self.rules)
        # Lock in id order: two batches (or a batch and an acknowledgement) never deadlock.
        list(AlertRule.objects.select_for_update().filter(pk__in=ids).order_by("pk").values("pk"))
        for rule in self.rules.values():
            if rule.tenant_id is not None and rule.tenant is not None:
                self._tenants[rule.tenant_id] = rule.tenant
        live = (
            AlertInstance.objects.filter(rule_id__in=ids)
            .exclude(state__in=DORMANT_STATES)
            .select_related("tenant", "acknowledged_by")
        )
        for instance in live:
            instance.rule = self.rules[instance.rule_id]
            self.instances[instance.rule_id][instance.fingerprint] = instance
        return self

    def _tenant(self, tenant_id: int | None) -> Tenant | None:
        if tenant_id is None:
            return None
        if tenant_id not in self._tenants:
            self._tenants[tenant_id] = Tenant.objects.filter(pk=tenant_id).first()
        return self._tenants[tenant_id]

    # --- applying results -----------------------------------------------------------

    def _identity(self, rule: AlertRule, sample: Sample) -> tuple[dict, int | None]:
        tenant_id = rule.tenant_id if rule.tenant_id is not None else sample.tenant_id
        tenant = self._tenant(tenant_id)
        if tenant is None:
            tenant_id = None
        labels = dict(sample.labels)
        if rule.tenant_id is None and tenant is not None:
            # A global rule's instances are told apart (and routed) by their tenant,
            # named as in the SQL views and the metrics (the id as text).
            labels.setdefault("tenant_id", str(tenant.pk))
        return labels, tenant_id

    def apply(self, rule: AlertRule, samples: Sequence[Sample], *, complete: bool = True) -> None:
        """Apply one result. `complete`: the samples are the whole result (instances that
        are missing from it no longer hold); a push of external alerts is not."""
        current = self.instances[rule.pk]
        nodata = (
            complete and bool(rule.condition_operator) and all(s.value is None for s in samples)
        )
        seen: set[str] = set()
        starting = []
        for sample in samples:
            active = condition_holds(rule.condition_operator, rule.threshold, sample.value)
            if not active and not current:
                continue  # nothing to start and no live instance to update: the usual case
            labels, tenant_id = self._identity(rule, sample)
            fingerprint = fingerprint_of(rule.pk, labels)
            if fingerprint in seen:
                continue  # a repeated label set: the first row wins
            seen.add(fingerprint)
            instance = current.get(fingerprint)
            if instance is not None:
                self._step(rule, instance, active, sample.value, present=True, unknown=nodata)
            elif active:
                starting.append((fingerprint, labels, tenant_id, sample.value))
        if starting:
            # Only a condition that holds creates (or wakes) an instance.
            dormant = {
                i.fingerprint: i
                for i in AlertInstance.objects.filter(
                    rule=rule, fingerprint__in=[s[0] for s in starting]
                ).select_related("tenant")
            }
            for fingerprint, labels, tenant_id, value in starting:
                instance = dormant.get(fingerprint) or AlertInstance(
                    rule=rule,
                    tenant=self._tenant(tenant_id),
                    fingerprint=fingerprint,
                    labels=labels,
                    state=State.INACTIVE,
                    created_at=self.now,
                )
                instance.rule = rule
                current[fingerprint] = instance
                self._step(rule, instance, True, value, present=True, unknown=False)
        if complete:
            for fingerprint, instance in list(current.items()):
                if fingerprint not in seen:
                    self._step(rule, instance, False, None, present=False, unknown=nodata)
            self._set_health(rule, RuleHealth.NODATA if nodata else RuleHealth.OK, "")
        else:
            self._set_health(rule, RuleHealth.OK, "")

    def error(self, rule: AlertRule, message: str) -> None:
        """The rule could not be evaluated: its live instances go to `error`."""
        for instance in list(self.instances[rule.pk].values()):
            if instance.state in (State.PENDING, State.FIRING, State.NODATA):
                self._transition(
                    rule,
                    instance,
                    State.ERROR,
                    NotificationKind.STATE,
                    f"evaluation failed: {message}",
                )
                self._save(instance)
        self._set_health(rule, RuleHealth.ERROR, message)

    def repeat_if_due(self, rule: AlertRule, instance: AlertInstance) -> bool:
        """Notify a firing instance again if a repeat is due (cooldown over, silence gone)."""
        if instance.state != State.FIRING:
            return False
        reason = self._repeat_due(rule, instance)
        if not reason:
            return False
        self._transition(rule, instance, State.FIRING, NotificationKind.REPEAT, reason)
        self._save(instance)
        return True

    def resolve(self, rule: AlertRule, instance: AlertInstance) -> None:
        """The source says this instance is over (an external alert's endsAt)."""
        self._step(rule, instance, False, instance.value, present=False, unknown=False, hold=False)

    # --- the state machine ---------------------------------------------------------------

    def _step(
        self,
        rule: AlertRule,
        instance: AlertInstance,
        active: bool,
        value: float | None,
        *,
        present: bool,
        unknown: bool,
        hold: bool = True,
    ) -> None:
        now = self.now
        before = (instance.value, instance.condition_met)
        if present:
            instance.value = value
            instance.last_evaluated_at = now
        state = instance.state
        transitioned = self._decide(rule, instance, state, active, unknown, hold)
        instance.condition_met = active if not unknown else instance.condition_met
        if transitioned:
            self._save(instance)
        elif instance.pk is not None and (
            present or (instance.value, instance.condition_met) != before
        ):
            if id(instance) not in self._changed:
                self._value_updates[instance.pk] = instance

    def _decide(self, rule, instance, state, active, unknown, hold) -> bool:
        now = self.now
        if unknown and state in (State.PENDING, State.FIRING, State.ERROR):
            return self._transition(rule, instance, State.NODATA, NotificationKind.STATE, "no data")
        if state == State.NODATA and unknown:
            return False
        if state == State.FLAPPING:
            return self._flapping(rule, instance, active)
        if state in UNKNOWN_STATES:
            if instance.firing_since is not None:
                if active:
                    return self._transition(
                        rule,
                        instance,
                        State.FIRING,
                        NotificationKind.STATE,
                        "data is back; still firing",
                    )
                return self._notifying(rule, instance, State.RESOLVED, NotificationKind.RESOLVED)
            if active:
                return self._start(rule, instance)
            return self._transition(rule, instance, State.INACTIVE, NotificationKind.STATE)
        if state == State.FIRING and not active and hold and rule.keep_firing_for:
            if instance.keep_firing_until is None:
                instance.keep_firing_until = now + timedelta(milliseconds=rule.keep_firing_for)
            if now < instance.keep_firing_until:
                active = True  # kept firing: the condition cleared only moments ago
        elif active:
            instance.keep_firing_until = None
        if state in DORMANT_STATES:
            return self._start(rule, instance) if active else False
        if state == State.PENDING:
            if not active:
                return self._transition(rule, instance, State.INACTIVE, NotificationKind.STATE)
            if now - instance.pending_since >= timedelta(milliseconds=rule.for_duration):
                return self._notifying(rule, instance, State.FIRING, NotificationKind.FIRING)
            return False
        if state == State.FIRING:
            if not active:
                return self._notifying(rule, instance, State.RESOLVED, NotificationKind.RESOLVED)
            reason = self._repeat_due(rule, instance)
            if reason:
                return self._transition(
                    rule, instance, State.FIRING, NotificationKind.REPEAT, reason
                )
        return False

    def _start(self, rule: AlertRule, instance: AlertInstance) -> bool:
        if rule.for_duration:
            return self._transition(rule, instance, State.PENDING, NotificationKind.STATE)
        return self._notifying(rule, instance, State.FIRING, NotificationKind.FIRING)

    def _recent_changes(self, instance: AlertInstance) -> list[str]:
        horizon = self.now - timedelta(seconds=FLAP_WINDOW_SECONDS)
        changes = instance.recent_changes if isinstance(instance.recent_changes, list) else []
        return [c for c in changes if (_parse(c) or horizon) > horizon]

    def _notifying(self, rule, instance, to_state: str, kind: str) -> bool:
        """A transition that pages: counted, and replaced by `flapping` past the threshold."""
        changes = [*self._recent_changes(instance), self.now.isoformat()]
        instance.recent_changes = changes
        if len(changes) > FLAP_THRESHOLD:
            instance.condition_met = to_state == State.FIRING
            return self._transition(
                rule,
                instance,
                State.FLAPPING,
                NotificationKind.FLAPPING,
                f"{len(changes)} changes within {FLAP_WINDOW_SECONDS} s; notifications "
                "paused until it is stable",
            )
        return self._transition(rule, instance, to_state, kind)

    def _flapping(self, rule, instance, active: bool) -> bool:
        changes = self._recent_changes(instance)
        if instance.condition_met is not None and active != instance.condition_met:
            changes.append(self.now.isoformat())
        instance.recent_changes = changes
        if changes:
            return False
        # Stable for a whole window: back to what the condition says, notified.
        instance.recent_changes = [self.now.isoformat()]
        if active:
            return self._transition(
                rule, instance, State.FIRING, NotificationKind.FIRING, "stable again; firing"
            )
        return self._transition(
            rule, instance, State.RESOLVED, NotificationKind.RESOLVED, "stable again; resolved"
        )

    def _repeat_due(self, rule: AlertRule, instance: AlertInstance) -> str:
        if instance.acknowledged_at is not None:
            return ""
        if instance.notifications_silenced:
            if self._silenced(instance):
                return ""
            return "no silence applies any more; still firing"
        last = instance.last_alert_at or instance.firing_since
        if last is None:
            return ""
        cooldown = rule.effective_cooldown
        if self.now - last >= timedelta(milliseconds=cooldown):
            return f"still firing after the cooldown ({cooldown} ms)"
        return ""

    def _silenced(self, instance: AlertInstance) -> bool:
        key = instance.tenant_id
        if key not in self._silences:
            self._silences[key] = list(active_silences(instance.tenant, self.now))
        labels = routing_labels(instance)
        return any(matches(s.matchers, labels) for s in self._silences[key])

    def _transition(self, rule, instance, to_state: str, kind: str, message: str = "") -> bool:
        """Record one transition (or repeat): the instance, an AlertEvent, notify()."""
        now = self.now
        from_state = instance.state  # a new instance starts `inactive`
        instance.state = to_state
        if to_state != from_state:
            instance.last_state_change_at = now
        if to_state == State.PENDING:
            instance.pending_since = now
        elif to_state == State.FIRING:
            instance.firing_since = instance.firing_since or now
            instance.pending_since = None
            instance.resolved_at = None
        elif to_state in (State.RESOLVED, State.INACTIVE):
            if to_state == State.RESOLVED:
                instance.resolved_at = now
            instance.pending_since = None
            instance.firing_since = None
            instance.keep_firing_until = None
            instance.notifications_silenced = False
            # An acknowledgement lasts until the alert is over.
            instance.acknowledged_at = None
            instance.acknowledged_by = None
            instance.ack_comment = ""
        elif to_state in UNKNOWN_STATES:
            instance.pending_since = None
            instance.keep_firing_until = None
        if kind in ALERT_KINDS:
            instance.last_alert_at = now
        if to_state in (State.PENDING, State.FIRING, State.FLAPPING) or not instance.annotations:
            instance.annotations = render_annotations(rule, instance.labels, instance.value)
        self._record(
            AlertEvent(
                rule=rule,
                instance=instance,
                tenant=instance.tenant,
                timestamp=now,
                kind=kind,
                from_state=from_state,
                to_state=to_state,
                value=instance.value,
                labels=instance.labels,
                annotations=instance.annotations,
                message=message,
            )
        )
        return True

    def _record(self, event: AlertEvent) -> None:
        self._pending.append(event)
        self.events.append(event)

    def _channels_for(self, event: AlertEvent) -> list:
        key = (event.rule_id, event.tenant_id)
        if key not in self._channels:
            self._channels[key] = channels_for(event)
        return self._channels[key]

    def _save(self, instance: AlertInstance) -> None:
        """Mark a transitioned instance: written (with its events) by flush()."""
        self._changed[id(instance)] = instance
        if instance.pk is not None:
            self._value_updates.pop(instance.pk, None)

    # --- the rule --------------------------------------------------------------------

    def _set_health(self, rule: AlertRule, health: str, error: str) -> None:
        previous = rule.health
        if health == RuleHealth.ERROR and previous != RuleHealth.ERROR:
            self._rule_event(rule, "", State.ERROR, f"evaluation failed: {error}")
        elif previous == RuleHealth.ERROR and health != RuleHealth.ERROR:
            to_state = State.NODATA if health == RuleHealth.NODATA else State.INACTIVE
            self._rule_event(rule, State.ERROR, to_state, "evaluation recovered")
        rule.health = health
        rule.last_error = error
        rule.last_evaluated_at = self.now
        self._rule_updates[rule.pk] = rule

    def _rule_event(self, rule: AlertRule, from_state: str, to_state: str, message: str) -> None:
        self._record(
            AlertEvent(
                rule=rule,
                instance=None,
                tenant=rule.tenant,
                timestamp=self.now,
                kind=NotificationKind.STATE,
                from_state=from_state,
                to_state=to_state,
                value=None,
                labels={},
                annotations={},
                message=message,
            )
        )

    # --- writing -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything in bulk: new instances, events, ledger rows (through
        dispatch.notify_many), changed instances, values, rule health; then tell the
        live board. A storm of 10,000 transitions costs a handful of statements."""
        if self._pending:
            self._write_transitions()
        if self._value_updates:
            changed = list(self._value_updates.values())
            bulk_save(changed, VALUE_FIELDS)
            self._publish(changed)
            self._value_updates.clear()
        if self._rule_updates:
            # Most rules of a batch end alike (ok, same time): one UPDATE per outcome.
            outcomes: dict[tuple, list[int]] = {}
            for rule in self._rule_updates.values():
                key = (rule.health, rule.last_error, rule.last_evaluated_at)
                outcomes.setdefault(key, []).append(rule.pk)
            for (health, last_error, evaluated_at), ids in outcomes.items():
                AlertRule.objects.filter(pk__in=ids).update(
                    health=health, last_error=last_error, last_evaluated_at=evaluated_at
                )
            self._rule_updates.clear()

    def _write_transitions(self) -> None:
        changed = list(self._changed.values())
        AlertInstance.objects.bulk_create(
            [i for i in changed if i.pk is None], batch_size=BULK_SIZE
        )
        events, self._pending = self._pending, []
        AlertEvent.objects.bulk_create(events, batch_size=BULK_SIZE)
        channels = {e.pk: self._channels_for(e) if e.instance_id else [] for e in events}
        rows = notify_many(events, channels)  # every event goes through dispatch
        for event in events:
            if event.instance is not None and event.kind in ALERT_KINDS:
                sent = rows[event.pk]
                event.instance.notifications_silenced = bool(sent) and all(
                    row.status == NotificationStatus.SUPPRESSED_SILENCE for row in sent
                )
        bulk_save(changed, ENGINE_FIELDS)
        self._publish(changed)
        self._changed.clear()

    def _publish(self, instances: Iterable[AlertInstance]) -> None:
        """The live board learns of bulk writes (they send no post_save) after commit."""
        by_tenant: dict[int, list[int]] = {}
        for instance in instances:
            if instance.tenant_id is not None:
                by_tenant.setdefault(instance.tenant_id, []).append(instance.pk)
        if by_tenant:
            from alerts.live.publish import publish

            for tenant_id, ids in by_tenant.items():
                transaction.on_commit(partial(publish, tenant_id, ids), robust=True)

    def firing_count(self, rule: AlertRule) -> int:
        return sum(1 for i in self.instances[rule.pk].values() if i.state == State.FIRING)


# --- entry points for one rule -------------------------------------------------------------


def apply_samples(
    rule: AlertRule,
    samples: Sequence[Sample],
    now: datetime | None = None,
    *,
    complete: bool | None = None,
) -> list[AlertEvent]:
    """Apply samples to a rule's instances; returns the AlertEvents recorded.

    For an external rule (pushed alerts) the samples are not the whole picture: instances
    that are not among them are left as they are, and `resolve_instance` ends one.
    For polled rules the samples are the complete result of one evaluation.
    """
    if complete is None:
        complete = rule.datasource != Datasource.EXTERNAL
    with transaction.atomic():
        machine = StateMachine([rule], now).load()
        machine.apply(rule, samples, complete=complete)
        machine.flush()
    return machine.events


def record_error(rule: AlertRule, message: str, now: datetime | None = None) -> list[AlertEvent]:
    """The rule could not be evaluated (unreachable datasource, failing query)."""
    with transaction.atomic():
        machine = StateMachine([rule], now).load()
        machine.error(rule, message)
        machine.flush()
    return machine.events


def resolve_instance(instance: AlertInstance, now: datetime | None = None) -> list[AlertEvent]:
    """End an instance now (an external alert resolved at its source)."""
    rule = AlertRule.objects.select_related("tenant").get(pk=instance.rule_id)
    with transaction.atomic():
        machine = StateMachine([rule], now).load()
        live = machine.instances[rule.pk].get(instance.fingerprint)
        if live is None:
            return []  # already inactive or resolved
        machine.resolve(rule, live)
        machine.flush()
    instance.refresh_from_db()
    return machine.events
