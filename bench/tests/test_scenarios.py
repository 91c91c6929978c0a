"""Each benchmark scenario runs end to end at a tiny scale (figures printed, none asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.conf import settings

from bench._support import BASE_DIR
from conftest import require_postgresql

pytestmark = pytest.mark.integration


def run_scenario(redis_url: str, suffix: str, *argv: str) -> str:
    db = settings.DATABASES["default"]
    require_postgresql("the benchmarks run on PostgreSQL")
    host = db["HOST"] or "127.0.0.1"
    url = f"postgres://{db['USER']}@{host}:{db['PORT'] or 5432}/{db['NAME']}_{suffix}"
    result = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=BASE_DIR,
        env={**os.environ, "BENCH_DATABASE_URL": url, "BENCH_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def row(out: str, label: str) -> list[str]:
    """The cells of the table row starting with `label` (split on 2+ spaces)."""
    for line in out.splitlines():
        if line.startswith(label):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_latency_scenario(redis_url):
    out = run_scenario(redis_url, "latbench", "latency", "--trials", "3")
    for label in ("event -> firing POST", "event -> resolved POST"):
        cells = row(out, label)
        assert cells[1] == "3"  # trials measured
        p50, p95, worst, best = (float(c) for c in cells[2:6])
        assert 0 < best <= p50 <= p95 <= worst


def test_evaluation_scale_scenario(redis_url):
    out = run_scenario(
        redis_url, "scalebench", "evaluation_scale", "--tenants", "2", "--steps", "4,10",
        "--events", "500", "--audit", "200", "--passes", "1",
    )  # fmt: skip
    assert "prepared 2 tenants x 5 rules = 10 rules, 500 events, 200 audit rows" in out
    assert "calibration: one indexed rule query " in out
    table = [line.split() for line in out.splitlines()]
    rows = [r[:3] for r in table if r[:1] in (["4"], ["10"]) and r[1:2] in (["off"], ["on"])]
    assert rows == [["4", "off", "1"], ["10", "off", "1"], ["4", "on", "1"], ["10", "on", "1"]]
    assert "10 rules, best pass: off " in out


def test_alert_storm_scenario(redis_url):
    out = run_scenario(
        redis_url, "stormbench", "alert_storm", "--instances", "40", "--tenants", "2",
        "--rules", "2",
    )  # fmt: skip
    assert row(out, "instances firing")[1] == "40 (expected 40)"
    assert row(out, "ledger rows ")[1].startswith("80 (expected 80")
    assert row(out, "ledger rows per channel type")[1] == "slack 40, webhook 40"
    # Every webhook alert arrived; each rule's 10 instances grouped into one message per channel.
    assert row(out, "groups per channel type")[1] == "slack 4, webhook 4"
    assert row(out, "alerts listed in webhook POSTs")[1] == "40"
    assert row(out, "POSTs received")[1] == "slack 4, webhook 4"


def test_ingest_scenario(redis_url):
    out = run_scenario(
        redis_url, "ingestbench", "ingest", "--seconds", "1", "--batches", "10,50",
        "--workers", "1", "--concurrency", "2", "--celery-concurrency", "1",
        "--steady-rate", "200",
    )  # fmt: skip
    for label in ("ingest, batch 10", "ingest, batch 50", "causality, drain backlog"):
        events_per_second = row(out, label)[1].replace(",", "")
        assert float(events_per_second) > 0, row(out, label)
    assert row(out, "steady, ingest 200 ev/s (worker on)")
    assert "lag p50" in row(out, "steady, causality lag")[-1]
