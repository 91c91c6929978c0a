"""The metrics benchmark scenarios run end to end at a tiny scale (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from bench._support import BASE_DIR
from conftest import require_postgresql

pytestmark = pytest.mark.integration


def run_bench(redis_url: str, *args: str) -> str:
    db = settings.DATABASES["default"]
    require_postgresql("the benchmarks run on PostgreSQL")
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}_bench"
    result = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=BASE_DIR,
        env={**os.environ, "BENCH_DATABASE_URL": url, "BENCH_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_scrape_scenario(redis_url):
    out = run_bench(
        redis_url, "metrics_scrape", "--tenants", "3", "--repeat", "1", "--writers", "2"
    )
    rows = [line.split() for line in out.splitlines() if line.startswith("3 ")]
    assert [row[1] for row in rows] == ["single", "multiprocess"]
    assert all(int(row[2]) > 3 * 60 for row in rows)  # ~70 lines per tenant


def test_overhead_scenario(redis_url):
    out = run_bench(
        redis_url,
        "metrics_overhead",
        "--rounds", "2", "--seconds", "0.3", "--warmup", "0.1", "--keys", "2",
    )  # fmt: skip
    # Two rounds: one per start order of the servers (each half restarts them).
    assert "started again in the other order" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    for endpoint in ("trivial", "representative"):
        assert float(rows[endpoint][1]) > 0 and float(rows[endpoint][2]) > 0  # req/s on, off
    assert "server RSS at the end" in out
