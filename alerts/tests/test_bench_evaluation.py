"""The evaluation benchmark runs end to end at a tiny scale (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from bench._support import BASE_DIR
from conftest import require_postgresql

pytestmark = pytest.mark.integration


def test_evaluation_scenario(redis_url):
    db = settings.DATABASES["default"]
    require_postgresql("the benchmarks run on PostgreSQL")
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}_evalbench"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "evaluation", "--tenants", "2", "--rules", "5",
            "--events", "500", "--audit", "200", "--storm", "30",
        ],
        cwd=BASE_DIR,
        env={**os.environ, "BENCH_DATABASE_URL": url, "BENCH_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    passes = [
        line.split() for line in out.splitlines() if line.startswith(("in process", "Celery"))
    ]
    assert [row[-5] for row in passes] == ["10"] * 4  # the rules column
    assert "storm: instances firing           30" in out
    assert "storm: ledger rows                60" in out
    assert "storm: groups per channel         hook-0 1, hook-1 1" in out
    assert "storm: webhook messages received  2 (60 alerts listed)" in out
