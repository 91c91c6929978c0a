"""WebSocket routes (mounted by traversion_site/asgi.py behind session auth and origin checks)."""

from __future__ import annotations

from django.urls import path

from .consumers import LiveBoardConsumer

#: Where the board's socket lives (the page builds its URL from this).
SOCKET_PATH = "/ws/alerts/live/"

websocket_urlpatterns = [
    path(SOCKET_PATH.lstrip("/"), LiveBoardConsumer.as_asgi(), name="alerts-live-socket"),
]
