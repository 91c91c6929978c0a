"""The one Grafana HTTP API call we make: `POST /api/dashboards/db` (create or overwrite by uid)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

TIMEOUT_SECONDS = 10


class GrafanaError(Exception):
    """Grafana refused the dashboard or could not be reached; the message says why."""


@dataclass(frozen=True)
class GrafanaClient:
    """`url` is Grafana's base URL; `token` a service account token (sent as a Bearer token).

    Without a token, credentials in the URL (http://admin:admin@grafana:3000) are used as
    basic auth, which is how a fresh docker-compose Grafana can be reached.
    """

    url: str
    token: str = ""
    timeout: float = TIMEOUT_SECONDS

    def push(
        self, dashboard: dict[str, Any], *, folder_uid: str | None = None, message: str = ""
    ) -> dict[str, Any]:
        """Create or replace the dashboard with the same uid; returns Grafana's answer."""
        payload: dict[str, Any] = {
            # id null + uid: Grafana matches on the uid, so a second push updates in place.
            "dashboard": {**dashboard, "id": None},
            "overwrite": True,
        }
        if folder_uid:
            payload["folderUid"] = folder_uid
        if message:
            payload["message"] = message
        headers = {"Accept": "application/json"}
        base = self.url.rstrip("/")
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
            base = _without_credentials(base)  # requests would replace the header with them
        try:
            response = requests.post(
                f"{base}/api/dashboards/db", json=payload, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise GrafanaError(
                f"Grafana at {_without_credentials(base)} is unreachable: {exc}"
            ) from exc
        if not 200 <= response.status_code < 300:
            raise GrafanaError(
                f"Grafana refused dashboard {dashboard.get('uid')!r}: "
                f"HTTP {response.status_code} {_message_of(response)}"
            )
        try:
            return response.json()
        except ValueError:
            return {}


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _message_of(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip()
    if isinstance(body, dict):
        parts = [str(body[key]) for key in ("message", "status") if body.get(key)]
        if parts:
            return ": ".join(parts)
    return str(body)[:300]
