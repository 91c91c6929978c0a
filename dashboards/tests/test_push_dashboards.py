"""push_dashboards against a local HTTP server playing Grafana's dashboard API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from dashboards import library
from metrics.labels import tenant_label

TOKEN = "glsa_test_token_0123456789"


class FakeGrafana:
    """Records every request; answers like Grafana 11 (or with the queued error)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.dashboards: dict[str, dict] = {}
        self.errors: list[tuple[int, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if fake.errors:
                    status, answer = fake.errors.pop(0)
                elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, answer = 401, {"message": "invalid API key"}
                else:
                    dashboard = body["dashboard"]
                    previous = fake.dashboards.get(dashboard["uid"])
                    version = previous["version"] + 1 if previous else 1
                    fake.dashboards[dashboard["uid"]] = {"version": version, "model": dashboard}
                    status, answer = (
                        200,
                        {
                            "id": len(fake.dashboards),
                            "uid": dashboard["uid"],
                            "url": f"/d/{dashboard['uid']}/x",
                            "status": "success",
                            "version": version,
                            "slug": "x",
                        },
                    )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana(settings):
    fake = FakeGrafana()
    settings.GRAFANA_URL = fake.url
    settings.GRAFANA_TOKEN = TOKEN
    yield fake
    fake.close()


def push(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("push_dashboards", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_tenant_dashboard_payload(grafana, tenant_a, tenant_b):
    output = push("--tenant", "alpha", "--folder-uid", "tenants")

    assert len(grafana.requests) == 1
    request = grafana.requests[0]
    assert request["path"] == "/api/dashboards/db"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert set(body) == {"dashboard", "overwrite", "folderUid", "message"}
    assert body["overwrite"] is True
    assert body["folderUid"] == "tenants"
    dashboard = body["dashboard"]
    assert dashboard["id"] is None
    assert dashboard["uid"] == "traversion-tenant-alpha"
    assert dashboard["title"] == "Tenant Alpha Dashboard"
    assert "pushed traversion-tenant-alpha (Tenant Alpha Dashboard) version 1" in output

    # The tenant is fixed: a hidden constant, and every query selects exactly that tenant.
    # The label value is spelled as every producer spells it (metrics.labels).
    label = tenant_label(tenant_a)
    assert label != tenant_label(tenant_b)
    tenant_var = next(v for v in dashboard["templating"]["list"] if v["name"] == "tenant")
    assert tenant_var["type"] == "constant" and tenant_var["hide"] == 2
    assert tenant_var["query"] == label
    exprs = [e for p in library.panels(dashboard) for e in library.exprs(p)]
    assert len(exprs) >= 15
    for expr in exprs:
        assert f'tenant_id="{label}"' in expr, expr
        assert "$tenant" not in expr and "tenant_id=~" not in expr, expr
        assert f'tenant_id="{tenant_label(tenant_b)}"' not in expr, expr
    # Every tenant-scoped panel of the overview is there, and only those.
    overview = library.load("traversion-overview")
    expected = [
        p["title"]
        for p in library.panels(overview)
        if all(library.is_tenant_scoped(e) for e in library.exprs(p))
    ]
    assert [p["title"] for p in library.panels(dashboard)] == expected
    assert "Memory" not in expected and "Events/sec" in expected
    # Rows kept only where they still hold panels.
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert "Resources" in rows and "System Health" in rows


@pytest.mark.django_db
def test_push_is_idempotent_overwrite_by_uid(grafana, tenant_a):
    push("--tenant", "alpha")
    output = push("--tenant", "alpha")
    assert len(grafana.requests) == 2
    assert grafana.requests[0]["body"]["dashboard"] == grafana.requests[1]["body"]["dashboard"]
    assert list(grafana.dashboards) == ["traversion-tenant-alpha"]
    assert grafana.dashboards["traversion-tenant-alpha"]["version"] == 2
    assert "version 2" in output


@pytest.mark.django_db
def test_shared_dashboards_pushed_unchanged(grafana):
    push()
    pushed = {r["body"]["dashboard"]["uid"]: r["body"] for r in grafana.requests}
    assert set(pushed) == set(library.DASHBOARDS)
    for uid, body in pushed.items():
        assert body["overwrite"] is True
        assert "folderUid" not in body
        assert body["dashboard"] == {**library.load(uid), "id": None}


@pytest.mark.django_db
def test_all_tenants(grafana, tenant_a, tenant_b):
    push("--all-tenants")
    assert [r["body"]["dashboard"]["uid"] for r in grafana.requests] == [
        "traversion-tenant-alpha",
        "traversion-tenant-beta",
    ]


@pytest.mark.django_db
def test_version_mismatch_412_is_a_command_error(grafana, tenant_a):
    grafana.errors.append(
        (
            412,
            {
                "message": "The dashboard has been changed by someone else",
                "status": "version-mismatch",
            },
        )
    )
    with pytest.raises(CommandError) as excinfo:
        push("--tenant", "alpha")
    message = str(excinfo.value)
    assert "HTTP 412" in message
    assert "The dashboard has been changed by someone else" in message
    assert "version-mismatch" in message


@pytest.mark.django_db
def test_bad_token_401_is_a_command_error(grafana, tenant_a, settings):
    settings.GRAFANA_TOKEN = "wrong"
    with pytest.raises(CommandError, match=r"HTTP 401 invalid API key"):
        push("--tenant", "alpha")
    assert grafana.requests[0]["headers"]["Authorization"] == "Bearer wrong"
    assert grafana.dashboards == {}


@pytest.mark.django_db
def test_stops_at_the_first_refusal(grafana):
    grafana.errors.append((403, {"message": "Access denied to save dashboard"}))
    with pytest.raises(CommandError, match="HTTP 403 Access denied"):
        push()
    assert len(grafana.requests) == 1


@pytest.mark.django_db
def test_unreachable_grafana(settings, tenant_a):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.GRAFANA_URL = f"http://admin:secret@127.0.0.1:{port}"
    settings.GRAFANA_TOKEN = TOKEN
    with pytest.raises(CommandError) as excinfo:
        push("--tenant", "alpha")
    assert f"Grafana at http://127.0.0.1:{port} is unreachable" in str(excinfo.value)
    assert "secret" not in str(excinfo.value)


@pytest.mark.django_db
def test_unknown_tenant(grafana):
    with pytest.raises(CommandError, match="no tenant 'nope'"):
        push("--tenant", "nope")
    assert grafana.requests == []


@pytest.mark.django_db
def test_basic_auth_from_url_without_token(grafana, tenant_a, settings):
    settings.GRAFANA_URL = grafana.url.replace("http://", "http://admin:admin@")
    settings.GRAFANA_TOKEN = ""
    with pytest.raises(CommandError, match="HTTP 401"):
        push("--tenant", "alpha")
    assert grafana.requests[0]["headers"]["Authorization"] == "Basic YWRtaW46YWRtaW4="


def test_long_slug_uid_fits_grafana_limit():
    slug = "a-very-long-tenant-slug-that-goes-on-and-on"
    uid = library.tenant_dashboard_uid(slug)
    assert len(uid) == 40 and uid.startswith("traversion-tenant-a-very")
    assert uid != library.tenant_dashboard_uid(slug + "x")
    assert library.tenant_dashboard_uid("alpha") == "traversion-tenant-alpha"


@pytest.mark.django_db
def test_dry_run_prints_without_sending(grafana, tenant_a):
    output = push("--tenant", "alpha", "--dry-run")
    assert json.loads(output)[0]["uid"] == "traversion-tenant-alpha"
    assert grafana.requests == []
