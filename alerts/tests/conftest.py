"""Fixtures of the alerts tests that live in helper modules, made visible to every test here."""

from alerts.tests.celery_worker import celery_on_redis, celery_worker  # noqa: F401
from alerts.tests.receivers import http_receiver, smtp_server  # noqa: F401
