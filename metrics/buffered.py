"""Counters and histograms added up in memory, written to the multiprocess files in batches.

In multiprocess mode (PROMETHEUS_MULTIPROC_DIR, as under gunicorn and Celery prefork)
prometheus_client writes every increment to a memory-mapped file at once. A
representative API request makes 17 such writes (HTTP families, one per SQL statement,
the API key), and inside a request they cost far more than in a loop: about 350 us of
CPU under uvicorn, 3.5 % of the request (docs/BENCHMARKS.md, "Request overhead").

With `METRICS_FLUSH_INTERVAL` > 0 (ms, default 1000) an increment of a counter or a
histogram only adds to the value in process memory; the values that changed are written
to the process's files:

- every METRICS_FLUSH_INTERVAL, by a daemon thread of the process;
- before this process renders `/metrics` (so its own counts are never behind);
- before the process forks (the child starts from what the parent wrote), when a Celery
  pool process shuts down, and when the interpreter exits.

So a scrape sees another process's counts at most one interval late (Prometheus scrapes
every 15 s), and a process killed with SIGKILL loses at most its last interval of counts.
Gauges are written at once, as before. `METRICS_FLUSH_INTERVAL=0` writes every increment
at once (prometheus_client's own behaviour).

The values stay prometheus_client's own (`values.ValueClass`, subclassed), so they share
its files, its lock and its handling of forks.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

from prometheus_client import values

DEFAULT_INTERVAL_MS = 1_000
#: Metric types whose increments are batched (a gauge's value is written when set).
BUFFERED_TYPES = frozenset({"counter", "histogram"})

_lock = threading.Lock()
#: Values with increments not yet written, in this process.
_dirty: list = []
_state = {"installed": False, "interval": 0.0, "flusher": False}


def interval_seconds() -> float:
    """METRICS_FLUSH_INTERVAL (ms) from Django settings, or the environment before them."""
    from django.conf import settings

    if settings.configured and hasattr(settings, "METRICS_FLUSH_INTERVAL"):
        milliseconds = settings.METRICS_FLUSH_INTERVAL
    else:
        raw = os.environ.get("METRICS_FLUSH_INTERVAL", "").strip()
        milliseconds = int(raw) if raw.isdigit() else DEFAULT_INTERVAL_MS
    return max(0, milliseconds) / 1000


def flush() -> None:
    """Write this process's pending increments to its files."""
    if not _state["installed"]:
        return
    with _lock:
        dirty = _dirty[:]
        _dirty.clear()
        amounts = []
        for value in dirty:
            amounts.append((value, value._pending))
            value._pending = 0.0
            value._queued = False
    for value, amount in amounts:
        if amount:
            value._write(amount)


def _run_flusher(interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            flush()
        except Exception:  # a metric write must never end the flusher
            pass


def _start_flusher() -> None:
    with _lock:
        if _state["flusher"]:
            return
        _state["flusher"] = True
    threading.Thread(
        target=_run_flusher, args=(_state["interval"],), name="metrics-flush", daemon=True
    ).start()


def _after_fork_in_child() -> None:
    """The child has its own files (prometheus_client starts them empty) and no flusher;
    anything the parent had pending is the parent's to write."""
    global _lock
    _lock = threading.Lock()
    for value in _dirty:
        value._pending = 0.0
        value._queued = False
    _dirty.clear()
    _state["flusher"] = False  # threads do not survive a fork: start one on first use


def install() -> bool:
    """Batch increments from now on, if in multiprocess mode with an interval > 0.

    Values created before this keep writing at once (both kinds share the same files).
    """
    if _state["installed"]:
        return True
    base = values.ValueClass
    interval = interval_seconds()
    if not getattr(base, "_multiprocess", False) or interval <= 0:
        return False

    class BufferedValue(base):
        def __init__(self, typ, *args, **kwargs):
            super().__init__(typ, *args, **kwargs)
            self._buffered = typ in BUFFERED_TYPES
            self._pending = 0.0
            self._queued = False

        def _write(self, amount):
            base.inc(self, amount)

        def inc(self, amount):
            if not self._buffered:
                base.inc(self, amount)
                return
            with _lock:
                self._pending += amount
                if not self._queued:
                    self._queued = True
                    _dirty.append(self)
            if not _state["flusher"]:
                _start_flusher()

        def get(self):
            return base.get(self) + self._pending

    values.ValueClass = BufferedValue
    _state.update(installed=True, interval=interval)
    os.register_at_fork(before=flush, after_in_child=_after_fork_in_child)
    atexit.register(flush)
    return True
