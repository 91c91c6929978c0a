"""Tasks the Celery metrics test sends to a real worker (loaded with `--include`)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="metrics_test.succeed")
def succeed() -> int:
    return 1


@shared_task(name="metrics_test.fail")
def fail() -> None:
    raise RuntimeError("this task fails on purpose")


@shared_task(bind=True, name="metrics_test.retry_once", max_retries=1)
def retry_once(self) -> str:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "done"
