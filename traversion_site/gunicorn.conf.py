"""gunicorn settings: prometheus_client multiprocess mode for the web workers.

Each worker is a process with its own memory, so a counter kept in memory would show
only the share of whichever worker answered the scrape. In multiprocess mode every
worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR and `/metrics` merges
them (metrics/exposition.py). `make run` (traversion_site/run.py) points the web, the
Celery worker and beat at one wiped directory. Started any other way, gunicorn uses
var/prometheus-multiproc-web, wiped here, since no other process was told to share it.

Command-line options (--bind, --workers) still win over the values below.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Before anything imports prometheus_client: it picks its storage on import.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _var = Path(
        os.environ.get("TRAVERSION_VAR_DIR", Path(__file__).resolve().parent.parent / "var")
    )
    _dir = _var / "prometheus-multiproc-web"
    shutil.rmtree(_dir, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_dir)
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

wsgi_app = "traversion_site.wsgi:application"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
graceful_timeout = 5


def on_starting(server) -> None:
    # Workers inherit it: the system gauges then describe the master and every worker.
    os.environ["TRAVERSION_SERVER_PID"] = str(os.getpid())


def child_exit(server, worker) -> None:
    """A worker exited: drop its live gauges (counters keep what it counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
