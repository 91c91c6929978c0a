"""The embedded default: no Redis, an in-memory channel layer, boards that poll.

A change written by another process (the Celery worker) never reaches this process's
in-memory layer; here such a write is an UPDATE without signals. The board must still
show it, within a few poll intervals, and must not send twice what was pushed.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.utils import timezone

from alerts.choices import InstanceState
from alerts.live.publish import has_listeners, layer_is_shared, publish
from alerts.models import AlertInstance
from traversion_site.asgi import application

from .live_helpers import (
    ORIGIN,
    acknowledge,
    close_worker_connections,
    make_instance,
    make_rule,
    session_cookie,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

TIMEOUT = 5
POLL_MS = 100


@pytest_asyncio.fixture(autouse=True)
async def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.LIVE_BOARD_POLL_INTERVAL = POLL_MS
    assert not layer_is_shared()
    yield
    await close_worker_connections()


async def joined(user) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        application,
        "/ws/alerts/live/",
        headers=[(b"origin", ORIGIN), (b"cookie", cookie.encode())],
    )
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    hello = await communicator.receive_json_from(timeout=TIMEOUT)
    assert (hello["type"], hello["mode"]) == ("hello", "poll")
    return communicator


def write_elsewhere(instance, **fields) -> None:
    """An UPDATE as another process would commit it: no signal reaches this process."""
    AlertInstance.objects.filter(pk=instance.pk).update(**fields)


def delete_elsewhere(instance) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AlertInstance._meta.db_table} WHERE id = %s", [instance.pk])


async def test_changes_from_other_processes_arrive_by_polling(users, tenant_a, tenant_b):
    rule = await sync_to_async(make_rule)(tenant_a)
    instance = await sync_to_async(make_instance)(rule, state=InstanceState.PENDING)
    doomed = await sync_to_async(make_instance)(rule, {"service": "legacy"})
    other = await sync_to_async(make_instance)(await sync_to_async(make_rule)(tenant_b))
    socket = await joined(users["member"])

    await sync_to_async(write_elsewhere)(
        instance, state=InstanceState.FIRING, firing_since=timezone.now(), value=9.5
    )
    message = await socket.receive_json_from(timeout=TIMEOUT)
    assert message["type"] == "instance"
    assert (message["instance"]["id"], message["instance"]["state"]) == (instance.pk, "firing")
    assert message["instance"]["value"] == 9.5

    # B's change is not A's business; A's resolution is, and takes the row off the board.
    await sync_to_async(write_elsewhere)(other, value=1.0)
    await sync_to_async(write_elsewhere)(instance, state=InstanceState.RESOLVED)
    message = await socket.receive_json_from(timeout=TIMEOUT)
    assert (message["instance"]["id"], message["instance"]["on_board"]) == (instance.pk, False)
    assert await socket.receive_nothing(timeout=0.5)

    # Deleted while on the board (its rule was removed, say): the row goes away.
    await sync_to_async(delete_elsewhere)(doomed)
    removed = await socket.receive_json_from(timeout=TIMEOUT)
    assert (removed["type"], removed["id"]) == ("removed", doomed.pk)

    await sync_to_async(delete_elsewhere)(instance)
    await sync_to_async(write_elsewhere)(other, state=InstanceState.RESOLVED)
    assert await socket.receive_nothing(timeout=0.5)  # it had already left A's board
    await socket.disconnect()


async def test_changes_in_this_process_are_pushed_once(users, tenant_a):
    rule = await sync_to_async(make_rule)(tenant_a)
    instance = await sync_to_async(make_instance)(rule)
    socket = await joined(users["member"])
    assert has_listeners(tenant_a.pk)
    await sync_to_async(acknowledge)(instance, users["owner"])  # e.g. the API in this process
    message = await socket.receive_json_from(timeout=TIMEOUT)
    assert message["instance"]["acknowledged_by"] == "owner"
    # Five poll rounds later the poller has not repeated it.
    assert await socket.receive_nothing(timeout=5 * POLL_MS / 1000)
    await socket.disconnect()
    assert not has_listeners(tenant_a.pk)


async def test_a_publisher_without_local_boards_does_nothing(tenant_a):
    # What a Celery worker of the embedded default sees: no group in its own layer.
    instance = await sync_to_async(make_instance)(await sync_to_async(make_rule)(tenant_a))
    assert await sync_to_async(publish)(tenant_a.pk, [instance.pk]) == 0
