"""The live board's WebSocket (`/ws/alerts/live/`).

Protocol (JSON text frames):
- server -> client: `hello` {tenant: {slug, name}, mode: "push" | "poll"} once joined;
  `instance` {as_of, instance: <publish.instance_payload>}; `removed` {as_of, id};
  `pong`; `error` {error}.
- client -> server: `ping`; `subscribe` {tenant: slug} (only the socket's own tenant is
  accepted: any other is audited as a cross-tenant attempt and closes the socket).

The socket authenticates by session (scope["user"], set by AuthMiddlewareStack) and
picks its tenant like the REST API (?tenant=slug or the X-Tenant header for users in
several tenants; superusers name any tenant). It joins that tenant's group and no other.
Refusals are sent as close codes the page can act on: 4401 not logged in, 4400 tenant
to be chosen, 4403 no tenant / forbidden, 4404 unknown or foreign tenant.

With a shared (Redis) channel layer every change is pushed by `publish`. With the
in-memory layer (embedded default, no Redis) only changes made in this web process are
pushed; each socket therefore also polls its tenant's board every
LIVE_BOARD_POLL_INTERVAL ms and sends what changed (docs/alerting.md, "Live board").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from metrics.catalogue import WEBSOCKET_CONNECTIONS, WEBSOCKET_MESSAGES
from metrics.labels import tenant_label
from tenants import audit
from tenants.choices import AuditAction
from tenants.scoping import TenantSelectionError

from .publish import (
    LISTENER_REFRESH_SECONDS,
    board_payloads,
    group_name,
    layer_is_shared,
    mark_listening,
    now_iso,
    payloads_of,
)
from .tenancy import HandshakeRequest, resolve_board_tenant

logger = logging.getLogger(__name__)

CLOSE_AMBIGUOUS_TENANT = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_TENANT = 4404
#: TenantSelectionError.status -> close code.
CLOSE_FOR_STATUS = {400: CLOSE_AMBIGUOUS_TENANT, 403: CLOSE_FORBIDDEN, 404: CLOSE_UNKNOWN_TENANT}


class LiveBoardConsumer(AsyncJsonWebsocketConsumer):
    """One open board: one user, one tenant, one group."""

    async def connect(self) -> None:
        self.tenant = None
        self.group: str | None = None
        self.counted = False
        self.background: asyncio.Task | None = None
        #: Poll mode: the payloads this socket has sent, by instance id.
        self.known: dict[int, dict] | None = None
        # Accept first, then refuse with a close code: a browser only sees the code of a
        # socket that was accepted, and the page needs it to stop retrying and say why.
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.request = HandshakeRequest.from_scope(self.scope)
        try:
            context = await database_sync_to_async(resolve_board_tenant)(self.request)
        except TenantSelectionError as exc:
            await self.close(code=CLOSE_FOR_STATUS.get(exc.status, CLOSE_FORBIDDEN))
            return
        self.tenant = context.tenant
        # tenant_id is the tenant's primary key, as in every traversion_* family.
        self.metric_tenant = tenant_label(self.tenant)
        self.group = group_name(self.tenant.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        WEBSOCKET_CONNECTIONS.labels(self.metric_tenant).inc()
        self.counted = True
        shared = layer_is_shared(self.channel_layer)
        if shared:
            await database_sync_to_async(mark_listening)(self.tenant.pk)
        else:
            self.known = await database_sync_to_async(board_payloads)(self.tenant)
        self.background = asyncio.create_task(
            self._keep_listening() if shared else self._poll_forever()
        )
        await self.send_message(
            "hello",
            tenant={"slug": self.tenant.slug, "name": self.tenant.name},
            mode="push" if shared else "poll",
        )

    async def disconnect(self, code) -> None:
        if self.background is not None:
            self.background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.background
            self.background = None
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        if self.counted:
            WEBSOCKET_CONNECTIONS.labels(self.metric_tenant).dec()
            self.counted = False

    # --- client -> server ------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.tenant is None:
            return
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if not isinstance(content, dict):
            await self.send_message("error", error="expected a JSON object")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict, **kwargs) -> None:
        kind = content.get("type")
        if kind == "ping":
            await self.send_message("pong")
        elif kind == "subscribe":
            await self.subscribe(content.get("tenant"))
        else:
            await self.send_message("error", error=f"unknown message type {kind!r}")

    async def subscribe(self, slug) -> None:
        """A socket serves the tenant it was opened for; asking for another is refused."""
        if slug == self.tenant.slug:
            await self.send_message("subscribed", tenant=self.tenant.slug)
            return
        await database_sync_to_async(audit.record)(
            AuditAction.CROSS_TENANT,
            request=self.request,
            tenant=self.tenant,
            requested_tenant=str(slug)[:100],
            path=self.request.path,
        )
        await self.send_message("error", error="this socket serves only its own tenant")
        await self.close(code=CLOSE_FORBIDDEN)

    # --- channel layer -> client -----------------------------------------------------

    async def board_instance(self, event: dict) -> None:
        if event.get("tenant_id") != self.tenant.pk:  # a second wall behind the group
            logger.error("live board: dropped a message for tenant %s", event.get("tenant_id"))
            return
        payload = event["instance"]
        if self.known is not None:
            if payload["on_board"]:
                self.known[payload["id"]] = payload
            else:
                self.known.pop(payload["id"], None)
        await self.send_message("instance", as_of=event["as_of"], instance=payload)

    async def board_removed(self, event: dict) -> None:
        if event.get("tenant_id") != self.tenant.pk:
            logger.error("live board: dropped a message for tenant %s", event.get("tenant_id"))
            return
        if self.known is not None:
            self.known.pop(event["id"], None)
        await self.send_message("removed", as_of=event["as_of"], id=event["id"])

    async def send_message(self, message_type: str, **body) -> None:
        await self.send_json({"type": message_type, **body})
        WEBSOCKET_MESSAGES.labels(self.metric_tenant, message_type).inc()

    # --- background ------------------------------------------------------------------

    async def _keep_listening(self) -> None:
        """Shared layer: keep the tenant marked as watched so publishers keep publishing."""
        while True:
            await asyncio.sleep(LISTENER_REFRESH_SECONDS)
            try:
                await database_sync_to_async(mark_listening)(self.tenant.pk)
            except Exception:  # a cache hiccup must not end the socket; next round retries
                logger.exception("live board: could not refresh the listener mark")

    async def _poll_forever(self) -> None:
        """In-memory layer: find changes made by other processes by reading the board."""
        interval = settings.LIVE_BOARD_POLL_INTERVAL / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except Exception:  # a database hiccup must not end the socket; next round retries
                logger.exception("live board: polling failed")

    async def poll_once(self) -> None:
        as_of = now_iso()
        current = await database_sync_to_async(board_payloads)(self.tenant)
        changed = [payload for pk, payload in current.items() if self.known.get(pk) != payload]
        gone = [pk for pk in self.known if pk not in current]
        final = await database_sync_to_async(payloads_of)(self.tenant, gone) if gone else {}
        self.known = current
        for payload in changed:
            await self.send_message("instance", as_of=as_of, instance=payload)
        for pk, payload in final.items():
            if payload is None:
                await self.send_message("removed", as_of=as_of, id=pk)
            else:  # resolved (or otherwise off the board): the page drops the row
                await self.send_message("instance", as_of=as_of, instance=payload)
