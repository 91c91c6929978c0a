from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_is_idempotent():
    assert "Created tenant acme" in run("create_tenant", "acme", "--name", "Acme Inc")
    assert "nothing to change" in run("create_tenant", "acme")
    assert "updated name" in run("create_tenant", "acme", "--name", "Acme Corp")
    assert list(Tenant.objects.values_list("slug", "name")) == [("acme", "Acme Corp")]


@pytest.mark.parametrize("slug", ["has space", "ünï", "a/b", "x" * 64])
def test_create_tenant_rejects_bad_slug(slug):
    with pytest.raises(CommandError, match="invalid slug"):
        run("create_tenant", slug)
    assert not Tenant.objects.exists()


def test_create_api_key_prints_working_key_once(api_client):
    run("create_tenant", "acme")
    output = run("create_api_key", "acme", "--name", "ingest", "--quiet").strip()
    assert output.startswith("trv_")
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {output}")
    assert api_client.get("/api/v1/tenants/").status_code == 200

    with pytest.raises(CommandError, match="already has an active key named 'ingest'"):
        run("create_api_key", "acme", "--name", "ingest")
    rotated = run("create_api_key", "acme", "--name", "ingest", "--rotate", "--quiet").strip()
    assert rotated != output
    assert api_client.get("/api/v1/tenants/").status_code == 401
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 1


def test_create_api_key_unknown_tenant():
    with pytest.raises(CommandError, match="no tenant 'ghost'"):
        run("create_api_key", "ghost")


def test_commands_exit_non_zero_from_shell(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "create_tenant", "bad slug"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ},
    )
    assert result.returncode != 0
    assert "invalid slug 'bad slug'" in result.stderr
