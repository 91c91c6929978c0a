"""The admin in a real browser (Playwright driving Debian's Chromium, headless).

A tenant admin logs in, creates a rule whose SQL the datasource refuses (the error is
shown, nothing is saved), fixes the query, saves, runs the "test fire" action, and finds
the test notification in the delivery ledger. A screenshot of the ledger is kept under
artifacts/ (gitignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from alerts.delivery import deliver_group
from alerts.models import AlertRule, Notification
from alerts.tests.celery_worker import celery_on_redis  # noqa: F401  (fixture)
from conftest import require_binary
from tenants.models import Membership

from .apihelpers import HttpReceiver, default_celery_app, make_channel

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BAD_QUERY = "SELECT avg(duration) FROM requests; DROP TABLE events"
GOOD_QUERY = "SELECT count(*) AS value FROM events WHERE severity = 'error'"


@pytest.fixture
def publish_to_redis(celery_on_redis):  # noqa: F811
    with default_celery_app(celery_on_redis):
        yield celery_on_redis


@pytest.fixture
def browser_page(monkeypatch):
    chromium = require_binary("chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # between browser steps are plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()
            # ORM calls made while Playwright's loop runs get their own connection (the
            # connection is context-local); close it, or the test database cannot be
            # dropped at the end of the run.
            connections.close_all()


def test_admin_rule_with_bad_sql_then_fixed_then_test_fired(
    live_server, browser_page, publish_to_redis, tenant_a
):
    page = browser_page
    user = get_user_model().objects.create_user("alpha_admin", password="pw-alpha-admin")
    user.is_staff = True
    user.save()
    Membership.objects.create(user=user, tenant=tenant_a, role="owner")

    with HttpReceiver() as slack:
        make_channel(tenant_a, "slack", config={"webhook_url": slack.url + "/services/T/B/X"})

        page.goto(live_server.url + "/admin/login/")
        page.fill("#id_username", "alpha_admin")
        page.fill("#id_password", "pw-alpha-admin")
        page.click("input[type=submit]")
        page.wait_for_url(live_server.url + "/admin/")

        page.goto(live_server.url + "/admin/alerts/alertrule/add/")
        page.select_option("#id_tenant", label="alpha")
        page.fill("#id_name", "checkout_errors")
        page.select_option("#id_severity", "warning")
        page.select_option("#id_datasource", "sql")
        page.fill("#id_query", BAD_QUERY)
        page.select_option("#id_condition_operator", ">")
        page.fill("#id_threshold", "10")
        page.select_option("#id_channels_from", label="slack (slack)")
        page.click("#id_channels_add")
        page.click("input[name=_save]")

        error = page.locator(".field-query .errorlist")
        error.wait_for()
        assert "requests" in error.inner_text() or "statement" in error.inner_text()
        assert not AlertRule.objects.exists()

        page.fill("#id_query", GOOD_QUERY)
        if page.locator("#id_channels_to option").count() == 0:  # kept across the re-render
            page.select_option("#id_channels_from", label="slack (slack)")
            page.click("#id_channels_add")
        page.click("input[name=_save]")
        page.locator(".messagelist .success").wait_for()
        rule = AlertRule.objects.get(name="checkout_errors")
        assert (rule.tenant, rule.query) == (tenant_a, GOOD_QUERY)
        assert [c.name for c in rule.channels.all()] == ["slack"]

        page.check(f"input[name=_selected_action][value='{rule.pk}']")
        page.select_option("select[name=action]", "test_fire")
        page.click("button[name=index]")
        message = page.locator(".messagelist .success")
        message.wait_for()
        assert "[TEST] notification queued for slack" in message.inner_text()

        row = Notification.objects.get(event__rule=rule, is_test=True)
        assert deliver_group(row.group_key).result == "sent"
        assert slack.json()["text"].startswith("[TEST] [FIRING] checkout_errors")

        page.goto(live_server.url + "/admin/alerts/notification/?is_test__exact=1")
        result = page.locator("#result_list tbody tr")
        assert result.count() == 1
        text = result.first.inner_text()
        assert "checkout_errors" in text and "Test" in text and "Sent" in text
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "admin_test_fire_ledger.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
