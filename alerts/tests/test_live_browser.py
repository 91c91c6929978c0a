"""The live board in a real browser (Debian's Chromium via Playwright) on a real ASGI server.

uvicorn serves traversion_site.asgi on the test database and the Redis channel layer;
this process writes instances through the ORM, as the engine's worker would from its
own process, and the page must show them without a reload, act on them through the
REST API, and catch up after the server went away and came back.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection, connections

from alerts.choices import InstanceState
from alerts.models import Silence
from conftest import require_binary

from .live_helpers import change_state, make_instance, make_rule

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parents[2]
ARTIFACTS = BASE_DIR / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "board-password-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AsgiServer:
    """uvicorn on 127.0.0.1 serving the app on the test database; stoppable and restartable."""

    def __init__(self, redis_url: str):
        db = connection.settings_dict
        credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{credentials}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "DATABASE_CONN_MAX_AGE": "0",
            "REDIS_URL": redis_url,
            "SECRET_KEY": django_settings.SECRET_KEY,
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
        }
        self.process: subprocess.Popen | None = None
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = open(ARTIFACTS / "live_board_server.log", "ab")

    def start(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "traversion_site.asgi:application"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            command, cwd=BASE_DIR, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"uvicorn exited with {self.process.returncode}; see {self.log.name}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pytest.fail(f"uvicorn did not answer within 60 s; see {self.log.name}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def server(redis_url):
    server = AsgiServer(redis_url)
    server.start()
    yield server
    server.stop()
    server.log.close()


@pytest.fixture
def board_user(users, settings):
    """The tenant's member (not staff), with a password the server's default hasher reads."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    user = users["member"]
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


@pytest.fixture
def browser(monkeypatch):
    require_binary("chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls of this
    # test are plain blocking calls all the same (Django documents this switch for it).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()
        # ORM calls made inside Playwright's context got connections of their own; close
        # them here, or they would outlive the test and keep the test database busy.
        connections.close_all()


def elsewhere(func, *args, **kwargs):
    """Run an ORM write in a thread of its own, as the engine's worker writes from its process.

    (This thread belongs to Playwright's event loop, where publishing cannot block on
    the channel layer; a worker thread is what the engine and the API really are.)
    """

    def run():
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def row(instance_id: int) -> str:
    return f'tr[data-instance-id="{instance_id}"]'


def test_board_shows_firing_alerts_live_and_acts_on_them(
    board_user, tenant_a, tenant_b, server, browser
):
    # (Fixture order: the browser, and with it Playwright's event loop in this thread,
    # is gone before the database is flushed.)
    rule = elsewhere(make_rule, tenant_a)
    latency = elsewhere(make_rule, tenant_a, name="traversion_high_p95_latency", severity="warning")
    waiting = elsewhere(
        make_instance, latency, {"route": "/api/v1/events"}, state=InstanceState.PENDING
    )
    foreign = elsewhere(make_instance, elsewhere(make_rule, tenant_b), {"service": "checkout"})

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url + "/alerts/live/")
    page.fill('input[name="username"]', board_user.username)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_selector('[data-live-status="live"]', timeout=15_000)
    page.wait_for_selector(
        f'section[data-severity="warning"] {row(waiting.pk)}[data-state="pending"]', timeout=2_000
    )
    assert page.locator(row(foreign.pk)).count() == 0
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    # A rule fires (written from this process, as the engine's worker would): the row
    # appears within 2 s, without a reload.
    firing = elsewhere(make_instance, rule, {"service": "checkout"}, value=0.42)
    selector = f'section[data-severity="critical"] {row(firing.pk)}[data-state="firing"]'
    page.wait_for_selector(selector, timeout=2_000)
    assert page.evaluate("window.__sameDocument") is True
    cells = page.locator(row(firing.pk))
    assert "traversion_high_error_rate" in cells.inner_text()
    assert "service=checkout" in cells.inner_text()
    assert cells.locator("a", has_text="Runbook").get_attribute("href") == rule.runbook_url

    # Acknowledge from the page: the API call's change comes back over the socket.
    cells.locator('button[data-action="acknowledge"]').click()
    page.wait_for_selector(f'{row(firing.pk)}[data-acknowledged="true"]', timeout=5_000)
    assert "Acknowledged by member" in page.locator(row(firing.pk)).inner_text()
    firing.refresh_from_db()
    assert firing.acknowledged_by == board_user

    # Silence it for an hour from the page.
    page.locator(row(firing.pk)).locator('button[data-action="silence"]').click()
    page.wait_for_selector(f'{row(firing.pk)}[data-silenced="true"]', timeout=5_000)
    silence = Silence.objects.get(tenant=tenant_a)
    assert sorted(silence.matchers, key=lambda m: m["name"]) == [
        {"name": "alertname", "op": "=", "value": "traversion_high_error_rate"},
        {"name": "service", "op": "=", "value": "checkout"},
    ]
    length = silence.ends_at - silence.starts_at
    assert timedelta(minutes=59) < length <= timedelta(minutes=61)
    assert silence.created_by == board_user

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live_board.png"), full_page=True)

    # The server goes away; meanwhile an alert fires and another resolves. After the
    # reconnect the page reads a fresh snapshot and shows both changes.
    server.stop()
    page.wait_for_selector('[data-live-status="reconnecting"]', timeout=10_000)
    missed = elsewhere(make_instance, rule, {"service": "payments"})
    elsewhere(change_state, waiting, InstanceState.RESOLVED)
    server.start()
    page.wait_for_selector(f"{row(missed.pk)}[data-state=firing]", timeout=30_000)
    page.wait_for_selector(row(waiting.pk), state="detached", timeout=2_000)
    page.wait_for_selector('[data-live-status="live"]', timeout=2_000)
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(ARTIFACTS / "live_board_after_reconnect.png"), full_page=True)
