from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from traversion_site import health


@pytest.fixture(autouse=True)
def no_heartbeat():
    cache.delete(health.HEARTBEAT_KEY)
    yield
    cache.delete(health.HEARTBEAT_KEY)


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_names_missing_beat(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["beat"]
    assert body["checks"]["beat"]["detail"] == "no heartbeat recorded yet"
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readyz_ok_after_heartbeat(client):
    health.record_heartbeat()
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["down"] == []


@pytest.mark.django_db
def test_readyz_stale_heartbeat(client, settings):
    cache.set(health.HEARTBEAT_KEY, time.time() - settings.HEARTBEAT_STALE_SECONDS - 5)
    body = client.get("/readyz").json()
    assert body["down"] == ["beat"]
    assert body["checks"]["beat"]["detail"].startswith("last heartbeat")


@pytest.mark.django_db
def test_readyz_names_broker_down(client, monkeypatch):
    from traversion_site.celery import app

    health.record_heartbeat()
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]


def test_readyz_names_database_down(client, monkeypatch):
    from django.db import connection

    def broken_cursor(*args, **kwargs):
        raise OSError("connection refused")

    health.record_heartbeat()
    monkeypatch.setattr(connection, "cursor", broken_cursor)
    body = client.get("/readyz").json()
    assert "database" in body["down"]
    assert "connection refused" in body["checks"]["database"]["detail"]
