"""Scrape cost: /metrics render time and size with 100 and 1,000 tenants' series.

For each tenant count the database gets exactly that many tenants, and a fresh process
fills every tenant-labelled family as a busy deployment would (requests on four routes
with two statuses, audit and auth events, events of three types from three services,
queries with their latency histograms, causality, alert evaluations, ...: about 70
series per tenant), then renders `/metrics` through the real view:

- single: one process holds every series (prometheus_client's default registry);
- multiprocess: three writer processes hold them, as three gunicorn workers would, and
  the render merges their files (PROMETHEUS_MULTIPROC_DIR), which is production.

The first render computes the scrape-time gauges (quota per tenant, sessions,
connections, dependencies); the next ones reuse them (METRICS_COLLECTION_INTERVAL), as
Prometheus scrapes do within an interval. Reported: lines, body size, first and median
render time, and lines rendered per second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from . import _support as support


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tenants", default="100,1000", help="comma-separated tenant counts (default 100,1000)"
    )
    parser.add_argument("--writers", type=int, default=3, help="processes in multiprocess mode")
    parser.add_argument("--repeat", type=int, default=5, help="renders after the first")


def set_tenants(count: int) -> None:
    from tenants.models import Tenant

    Tenant.objects.all().delete()
    Tenant.objects.bulk_create(
        [Tenant(slug=f"bench-{i:05d}", name=f"Bench {i}") for i in range(count)]
    )


def render(count: int, mode: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        env = support.app_env(METRICS_COLLECTION_INTERVAL="600000")
        command = [
            sys.executable,
            "-m",
            "bench._scrape_render",
            "--mode",
            mode,
            "--writers",
            str(args.writers),
            "--repeat",
            str(args.repeat),
            "--directory",
            directory,
        ]
        result = subprocess.run(
            command, cwd=support.BASE_DIR, env=env, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"render {count} {mode} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    support.fresh_database()
    support.setup_django()
    rows = []
    for count in (int(n) for n in args.tenants.split(",")):
        set_tenants(count)
        for mode in ("single", "multiprocess"):
            figures = render(count, mode, args)
            rows.append(
                [
                    count,
                    mode,
                    figures["lines"],
                    f"{figures['bytes'] / 1024:.0f} KiB",
                    f"{figures['first_ms']:.0f}",
                    f"{figures['median_ms']:.0f}",
                    f"{figures['lines'] / (figures['median_ms'] / 1000):.0f}",
                ]
            )
    support.print_table(
        ["tenants", "mode", "lines", "body", "first ms", "median ms", "lines/s"], rows
    )
    return 0
