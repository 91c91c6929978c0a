"""ASGI entry point: Django for HTTP, Channels for the live board's WebSocket.

Served by gunicorn with uvicorn workers (`make run`, docker-compose) or uvicorn alone.
WebSockets pass two walls before a consumer sees them: the Origin must be one of
ALLOWED_HOSTS (a page on another site cannot open a socket with the user's cookies),
and the session cookie sets scope["user"].
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traversion_site.settings")

# Django is set up here, before anything that imports models.
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from alerts.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
