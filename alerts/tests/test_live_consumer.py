"""The live board's WebSocket through the real ASGI stack (origin check, session auth, Redis layer).

Each test opens sockets with Channels' WebsocketCommunicator against
traversion_site.asgi.application, changes instances through the ORM (a save(), as the
engine and the API do) and reads what each socket receives.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from alerts.choices import InstanceState
from alerts.live.consumers import (
    CLOSE_AMBIGUOUS_TENANT,
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNKNOWN_TENANT,
)
from alerts.live.publish import layer_is_shared
from tenants.choices import AuditAction
from tenants.models import AuditEvent
from traversion_site.asgi import application

from .live_helpers import (
    ORIGIN,
    RUNBOOK,
    acknowledge,
    change_state,
    close_worker_connections,
    fresh_channel_layer,
    make_instance,
    make_rule,
    sample,
    session_cookie,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

TIMEOUT = 5  # an upper bound for a message to arrive, not a measured latency
CONNECTIONS = "traversion_websocket_connections"
MESSAGES = "traversion_websocket_messages_total"


@pytest_asyncio.fixture(autouse=True)
async def worker_connections_closed():
    yield
    await close_worker_connections()


@pytest.fixture
def shared_layer(redis_url, settings):
    """The Redis channel layer the suite's settings configure (REDIS_URL is set)."""
    fresh_channel_layer(settings)
    layer = get_channel_layer()
    assert layer_is_shared(layer), "tests of push delivery need the Redis channel layer"
    return layer


async def open_socket(user=None, tenant: str | None = None, origin: bytes = ORIGIN):
    path = "/ws/alerts/live/" + (f"?tenant={tenant}" if tenant else "")
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if user is not None:
        cookie = await sync_to_async(session_cookie)(user)
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def joined(user, tenant: str | None = None) -> tuple[WebsocketCommunicator, dict]:
    communicator = await open_socket(user, tenant)
    hello = await communicator.receive_json_from(timeout=TIMEOUT)
    assert hello["type"] == "hello", hello
    return communicator, hello


async def closed_with(communicator) -> int:
    message = await communicator.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message.get("code")


db = sync_to_async


async def test_tenant_a_receives_its_changes_and_never_tenant_b(
    users, tenant_a, tenant_b, shared_layer
):
    rule_a = await db(make_rule)(tenant_a)
    rule_b = await db(make_rule)(tenant_b, name="traversion_high_cpu", severity="warning")
    socket_a, hello_a = await joined(users["owner"])
    socket_b, hello_b = await joined(users["owner_b"])
    assert hello_a["tenant"] == {"slug": "alpha", "name": "Alpha"}
    assert hello_b["tenant"]["slug"] == "beta"
    assert hello_a["mode"] == "push"
    instance_messages = sample(MESSAGES, tenant_id=str(tenant_a.pk), message_type="instance")

    # A's instance goes pending, then fires: both transitions reach A's board.
    instance_a = await db(make_instance)(rule_a, state=InstanceState.PENDING, value=0.07)
    pending = await socket_a.receive_json_from(timeout=TIMEOUT)
    assert pending["type"] == "instance"
    assert pending["instance"]["id"] == instance_a.pk
    assert pending["instance"]["state"] == "pending"
    await db(change_state)(instance_a, InstanceState.FIRING, value=0.12)
    firing = await socket_a.receive_json_from(timeout=TIMEOUT)
    assert firing["as_of"] >= pending["as_of"]
    assert firing["instance"] == {
        "id": instance_a.pk,
        "rule_id": rule_a.pk,
        "rule": "traversion_high_error_rate",
        "severity": "critical",
        "state": "firing",
        "on_board": True,
        "value": 0.12,
        "labels": {"service": "checkout"},
        "summary": "5xx ratio is 12%",
        "started_at": instance_a.firing_since.isoformat(),
        "pending_since": instance_a.pending_since.isoformat(),
        "firing_since": instance_a.firing_since.isoformat(),
        "last_state_change_at": instance_a.last_state_change_at.isoformat(),
        "acknowledged": False,
        "acknowledged_by": "",
        "acknowledged_at": None,
        "ack_comment": "",
        "silenced": False,
        "silence_id": None,
        "silenced_until": None,
        "runbook_url": RUNBOOK,
    }

    # B's instance fires: B's board hears of it, A's does not.
    instance_b = await db(make_instance)(rule_b, labels={"host": "db-1"})
    to_b = await socket_b.receive_json_from(timeout=TIMEOUT)
    assert to_b["instance"]["id"] == instance_b.pk
    assert to_b["instance"]["rule"] == "traversion_high_cpu"
    assert await socket_a.receive_nothing(timeout=0.5)
    # The next thing A hears is A's own acknowledgement: B's message was never queued for A.
    await db(acknowledge)(instance_a, users["member"])
    acked = await socket_a.receive_json_from(timeout=TIMEOUT)
    assert acked["instance"]["id"] == instance_a.pk
    assert acked["instance"]["acknowledged"] is True
    assert acked["instance"]["acknowledged_by"] == "member"
    assert await socket_b.receive_nothing(timeout=0.5)

    assert (
        sample(MESSAGES, tenant_id=str(tenant_a.pk), message_type="instance")
        == instance_messages + 3
    )
    await socket_a.disconnect()
    await socket_b.disconnect()


async def test_resolution_and_deletion_reach_the_board(users, tenant_a, shared_layer):
    rule = await db(make_rule)(tenant_a)
    instance = await db(make_instance)(rule)
    socket, _ = await joined(users["viewer"])
    await db(change_state)(instance, InstanceState.RESOLVED)
    resolved = await socket.receive_json_from(timeout=TIMEOUT)
    assert resolved["instance"]["state"] == "resolved"
    assert resolved["instance"]["on_board"] is False
    await db(instance.delete)()
    removed = await socket.receive_json_from(timeout=TIMEOUT)
    assert removed["type"] == "removed"
    assert removed["id"] == resolved["instance"]["id"]
    await socket.disconnect()


async def test_saves_that_change_nothing_visible_are_not_pushed(users, tenant_a, shared_layer):
    rule = await db(make_rule)(tenant_a)
    instance = await db(make_instance)(rule)
    socket, _ = await joined(users["owner"])
    instance.last_evaluated_at = instance.last_state_change_at
    await db(instance.save)(update_fields=["last_evaluated_at"])  # an evaluation tick
    await db(change_state)(instance, InstanceState.FLAPPING)
    message = await socket.receive_json_from(timeout=TIMEOUT)
    assert message["instance"]["state"] == "flapping"  # the tick sent nothing before it
    await socket.disconnect()


async def test_anonymous_socket_is_refused(users, tenant_a, shared_layer):
    before = sample(CONNECTIONS, tenant_id=str(tenant_a.pk))
    socket = await open_socket(user=None, tenant="alpha")
    assert await closed_with(socket) == CLOSE_UNAUTHENTICATED
    assert sample(CONNECTIONS, tenant_id=str(tenant_a.pk)) == before
    await socket.disconnect()


async def test_socket_from_another_site_is_refused(users, tenant_a, shared_layer):
    cookie = await db(session_cookie)(users["owner"])
    communicator = WebsocketCommunicator(
        application,
        "/ws/alerts/live/",
        headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie.encode())],
    )
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected is False
    await communicator.disconnect()


async def test_user_of_b_cannot_join_a(users, tenant_a, tenant_b, shared_layer):
    rule_a = await db(make_rule)(tenant_a)
    socket = await open_socket(users["member_b"], tenant="alpha")
    assert await closed_with(socket) == CLOSE_UNKNOWN_TENANT
    audit = await db(
        lambda: list(
            AuditEvent.objects.filter(action=AuditAction.CROSS_TENANT).values("actor", "details")
        )
    )()
    assert audit == [
        {"actor": "member_b", "details": {"requested_tenant": "alpha", "path": "/ws/alerts/live/"}}
    ]
    # Nothing of A reaches that socket afterwards.
    await db(make_instance)(rule_a)
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()


async def test_other_tenant_group_is_refused_after_joining(users, tenant_a, tenant_b, shared_layer):
    socket, _ = await joined(users["owner"])
    await socket.send_json_to({"type": "subscribe", "tenant": "alpha"})
    assert await socket.receive_json_from(timeout=TIMEOUT) == {
        "type": "subscribed",
        "tenant": "alpha",
    }
    await socket.send_json_to({"type": "subscribe", "tenant": "beta"})
    error = await socket.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error"
    assert await closed_with(socket) == CLOSE_FORBIDDEN
    recorded = await db(
        lambda: AuditEvent.objects.get(action=AuditAction.CROSS_TENANT).details["requested_tenant"]
    )()
    assert recorded == "beta"
    await socket.disconnect()


async def test_tenant_choice_follows_the_api_rules(users, tenant_a, tenant_b, shared_layer):
    # No tenant at all: refused.
    outsider = await open_socket(users["outsider"])
    assert await closed_with(outsider) == CLOSE_FORBIDDEN
    await outsider.disconnect()
    # A superuser must choose, and may choose any tenant.
    operator = await open_socket(users["operator"])
    assert await closed_with(operator) == CLOSE_AMBIGUOUS_TENANT
    await operator.disconnect()
    socket, hello = await joined(users["operator"], "beta")
    assert hello["tenant"]["slug"] == "beta"
    rule_b = await db(make_rule)(tenant_b)
    instance_b = await db(make_instance)(rule_b)
    message = await socket.receive_json_from(timeout=TIMEOUT)
    assert message["instance"]["id"] == instance_b.pk
    await socket.disconnect()
    # A member of one tenant needs no choice; naming it explicitly works the same.
    socket, hello = await joined(users["member"], "alpha")
    assert hello["tenant"]["slug"] == "alpha"
    await socket.disconnect()


async def test_ping_and_bad_frames(users, tenant_a, shared_layer):
    socket, _ = await joined(users["owner"])
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await socket.send_to(text_data="not json")
    assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "error"
    await socket.send_json_to({"type": "launch"})
    assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "error"
    await socket.disconnect()


async def test_connections_gauge_goes_up_and_down(users, tenant_a, tenant_b, shared_layer):
    alpha, beta = (
        sample(CONNECTIONS, tenant_id=str(tenant_a.pk)),
        sample(CONNECTIONS, tenant_id=str(tenant_b.pk)),
    )
    hellos = sample(MESSAGES, tenant_id=str(tenant_a.pk), message_type="hello")
    first, _ = await joined(users["owner"])
    second, _ = await joined(users["member"])
    assert sample(CONNECTIONS, tenant_id=str(tenant_a.pk)) == alpha + 2
    assert sample(CONNECTIONS, tenant_id=str(tenant_b.pk)) == beta
    assert sample(MESSAGES, tenant_id=str(tenant_a.pk), message_type="hello") == hellos + 2
    await first.disconnect()
    assert sample(CONNECTIONS, tenant_id=str(tenant_a.pk)) == alpha + 1
    await second.disconnect()
    assert sample(CONNECTIONS, tenant_id=str(tenant_a.pk)) == alpha


async def test_idle_socket_outlives_the_layers_blocking_read(users, tenant_a, shared_layer):
    # The layer waits for messages with a blocking read of brpop_timeout seconds; a Redis
    # client read timeout at or below it would end every socket that stays quiet that long.
    socket, _ = await joined(users["owner"])
    assert await socket.receive_nothing(timeout=shared_layer.brpop_timeout + 1.5)
    rule = await db(make_rule)(tenant_a)
    instance = await db(make_instance)(rule)
    message = await socket.receive_json_from(timeout=TIMEOUT)
    assert message["instance"]["id"] == instance.pk
    await socket.disconnect()
