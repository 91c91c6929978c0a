"""Publishing to the board: only on commit, only when someone listens, silences included.

These tests listen on the Redis channel layer directly (a channel added to the tenant's
group, as a socket's consumer does), so they check `publish` apart from the consumer.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from alerts.choices import InstanceState
from alerts.live.publish import (
    LAYER_INSTANCE,
    group_name,
    has_listeners,
    layer_is_shared,
    listener_key,
    mark_listening,
    publish,
)
from alerts.models import Silence

from .live_helpers import (
    change_state,
    close_worker_connections,
    fresh_channel_layer,
    make_instance,
    make_rule,
)

TIMEOUT = 5


@pytest.fixture
def quiet(redis_url, settings):
    """No board is open for any tenant (listener marks of earlier runs are cleared)."""
    from django.core.cache import cache

    fresh_channel_layer(settings)
    assert layer_is_shared(), "these tests need the Redis channel layer (REDIS_URL)"

    def clear(*tenants):
        cache.delete_many([listener_key(t.pk) for t in tenants])

    return clear


@pytest.mark.django_db(transaction=True)
def test_nobody_listening_costs_no_query(tenant_a, quiet, django_assert_num_queries):
    instance = make_instance(make_rule(tenant_a))
    quiet(tenant_a)
    assert has_listeners(tenant_a.pk) is False
    instance.state = InstanceState.RESOLVED
    with django_assert_num_queries(1):  # the UPDATE itself; publishing read nothing
        instance.save()
    # Once a board is open, the same save reads the row back (and the silences) to publish.
    mark_listening(tenant_a.pk)
    instance.state = InstanceState.FIRING
    with django_assert_num_queries(3):
        instance.save()


@pytest.mark.django_db(transaction=True)
def test_publishing_waits_for_the_commit_and_skips_rollbacks(tenant_a, quiet):
    layer = get_channel_layer()

    async def listen():
        channel = await layer.new_channel()
        await layer.group_add(group_name(tenant_a.pk), channel)
        return channel

    from asgiref.sync import async_to_sync

    channel = async_to_sync(listen)()
    mark_listening(tenant_a.pk)
    rule = make_rule(tenant_a)
    try:
        with transaction.atomic():
            make_instance(rule, {"service": "never"})
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    with transaction.atomic():
        committed = make_instance(rule, {"service": "kept"})
        change_state(committed, InstanceState.FIRING, value=3.0)
    # One message per save, each read after the commit: both show the committed row.
    first = async_to_sync(layer.receive)(channel)
    second = async_to_sync(layer.receive)(channel)
    assert first["type"] == second["type"] == LAYER_INSTANCE
    assert first["tenant_id"] == tenant_a.pk
    assert first["instance"]["id"] == second["instance"]["id"] == committed.pk
    assert first["instance"]["value"] == 3.0
    async_to_sync(layer.flush)()


@pytest_asyncio.fixture
async def board_channel(redis_url, settings):
    fresh_channel_layer(settings)
    layer = get_channel_layer()
    channels = []

    async def listen(tenant):
        channel = await layer.new_channel()
        await layer.group_add(group_name(tenant.pk), channel)
        await sync_to_async(mark_listening)(tenant.pk)
        channels.append(channel)
        return channel

    yield listen
    await layer.flush()
    await close_worker_connections()


async def receive_all(channel, count: int) -> list[dict]:
    layer = get_channel_layer()
    import asyncio

    return [await asyncio.wait_for(layer.receive(channel), TIMEOUT) for _ in range(count)]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_silence_changes_republish_the_tenants_board(tenant_a, tenant_b, board_channel):
    rule = await sync_to_async(make_rule)(tenant_a)
    checkout = await sync_to_async(make_instance)(rule, {"service": "checkout"})
    search = await sync_to_async(make_instance)(rule, {"service": "search"})
    await sync_to_async(make_instance)(rule, {"service": "cart"}, state=InstanceState.RESOLVED)
    channel = await board_channel(tenant_a)
    silence = await sync_to_async(Silence.objects.create)(
        tenant=tenant_a,
        matchers=[{"name": "service", "op": "=", "value": "checkout"}],
        ends_at=timezone.now() + timedelta(hours=1),
    )
    messages = await receive_all(channel, 2)  # the two instances on the board, not the resolved
    flags = {
        m["instance"]["id"]: (m["instance"]["silenced"], m["instance"]["silence_id"])
        for m in messages
    }
    assert flags == {checkout.pk: (True, silence.pk), search.pk: (False, None)}

    await sync_to_async(silence.delete)()
    messages = await receive_all(channel, 2)
    assert {m["instance"]["id"]: m["instance"]["silenced"] for m in messages} == {
        checkout.pk: False,
        search.pk: False,
    }


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_global_silence_reaches_every_listening_tenant(tenant_a, tenant_b, board_channel):
    instance_a = await sync_to_async(make_instance)(await sync_to_async(make_rule)(tenant_a))
    instance_b = await sync_to_async(make_instance)(await sync_to_async(make_rule)(tenant_b))
    channel_a = await board_channel(tenant_a)
    channel_b = await board_channel(tenant_b)
    await sync_to_async(Silence.objects.create)(
        tenant=None,
        matchers=[{"name": "alertname", "op": "=", "value": "traversion_high_error_rate"}],
        ends_at=timezone.now() + timedelta(hours=1),
    )
    (to_a,) = await receive_all(channel_a, 1)
    (to_b,) = await receive_all(channel_b, 1)
    assert (to_a["tenant_id"], to_a["instance"]["id"], to_a["instance"]["silenced"]) == (
        tenant_a.pk,
        instance_a.pk,
        True,
    )
    assert (to_b["tenant_id"], to_b["instance"]["id"], to_b["instance"]["silenced"]) == (
        tenant_b.pk,
        instance_b.pk,
        True,
    )


@pytest.mark.django_db(transaction=True)
def test_a_broken_channel_layer_never_breaks_the_save(tenant_a, settings, caplog):
    # Nothing listens on port 1: every publish fails to connect.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    instance = make_instance(make_rule(tenant_a))
    mark_listening(tenant_a.pk)
    with caplog.at_level(logging.ERROR, logger="alerts.live.publish"):
        change_state(instance, InstanceState.RESOLVED)
        with transaction.atomic():
            change_state(instance, InstanceState.FIRING)
    instance.refresh_from_db()
    assert instance.state == InstanceState.FIRING
    failures = [r for r in caplog.records if "publishing to tenant" in r.getMessage()]
    assert len(failures) == 2
    assert publish(tenant_a.pk, [instance.pk]) == 0
