"""`traversion_celery_queue_length`: messages waiting in each Celery queue, at scrape time.

Redis brokers: the queue's lists (kombu keeps one per priority step), read with LLEN.
The filesystem broker of the embedded default: the queue's message files. Other
transports report nothing rather than a wrong number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import urlparse

from .collectors import scrape_gauge

#: kombu's Redis transport defaults (kombu.transport.redis).
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
TIMEOUT_SECONDS = 1.0


def known_queues(app) -> list[str]:
    """The default queue, declared queues, and queues named in task routes."""
    conf = app.conf
    names = {conf.task_default_queue or "celery"}
    names.update(queue.name for queue in (conf.task_queues or ()))
    routes = conf.task_routes
    for route in routes.values() if isinstance(routes, dict) else ():
        if isinstance(route, dict) and route.get("queue"):
            queue = route["queue"]
            names.add(queue if isinstance(queue, str) else queue.name)
    return sorted(names)


def redis_lengths(broker_url: str, queues: Iterable[str], options: dict) -> dict[str, int]:
    import redis

    steps = sorted(set(options.get("priority_steps") or REDIS_PRIORITY_STEPS))
    separator = options.get("sep", REDIS_PRIORITY_SEPARATOR)
    client = redis.Redis.from_url(
        broker_url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
    try:
        pipe = client.pipeline(transaction=False)
        queues = list(queues)
        for queue in queues:
            for step in steps:
                pipe.llen(f"{queue}{separator}{step}" if step else queue)
        counts = pipe.execute()
    finally:
        client.close()
    per_queue = len(steps)
    return {
        queue: sum(counts[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(queues)
    }


def filesystem_lengths(queues: Iterable[str], options: dict) -> dict[str, int]:
    folder = options.get("data_folder_in")
    lengths = {queue: 0 for queue in queues}
    if not folder or not os.path.isdir(folder):
        return lengths
    with os.scandir(folder) as entries:
        for entry in entries:
            # kombu names messages `<ms>_<uuid>.<queue>.msg`.
            queue = entry.name.partition(".")[2].removesuffix(".msg")
            if queue in lengths:
                lengths[queue] += 1
    return lengths


def queue_lengths(broker_url: str, queues: Iterable[str], options: dict) -> dict[str, int]:
    scheme = urlparse(broker_url).scheme
    if scheme in ("redis", "rediss"):
        return redis_lengths(broker_url, queues, options)
    if scheme == "filesystem":
        return filesystem_lengths(queues, options)
    return {}


@scrape_gauge(
    "traversion_celery_queue_length",
    "Messages waiting in each Celery queue (Redis LLEN, or files of the filesystem broker).",
    ["queue"],
    cached=False,
)
def celery_queue_length():
    from traversion_site.celery import app

    lengths = queue_lengths(
        app.conf.broker_url, known_queues(app), dict(app.conf.broker_transport_options or {})
    )
    return [((queue,), length) for queue, length in sorted(lengths.items())]
