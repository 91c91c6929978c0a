"""Batched multiprocess writes (metrics/buffered.py), each case in a fresh interpreter:
the value class is chosen when prometheus_client is first imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

PRELUDE = """
import json, os, time
from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector
from metrics import buffered

def on_disk(name):
    files = [os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f)
             for f in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])]
    return sum(s.value for m in MultiProcessCollector.merge(files) for s in m.samples
               if s.name == name)
"""


def run(tmp_path: Path, code: str, interval: str = "1000") -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        METRICS_FLUSH_INTERVAL=interval,
        PYTHONPATH=str(BASE_DIR),
    )
    script = PRELUDE + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_increments_reach_the_files_at_a_flush_and_are_visible_in_process_at_once(tmp_path):
    out = run(
        tmp_path,
        """
        c = Counter("jobs_total", "jobs")
        h = Histogram("job_seconds", "job time", buckets=(1.0,))
        g = Gauge("queue_depth", "depth", multiprocess_mode="livesum")
        c.inc(); c.inc(2); h.observe(0.5); g.set(7)
        before = [on_disk("jobs_total"), on_disk("job_seconds_count"), on_disk("queue_depth")]
        in_process = c._value.get()
        buffered.flush()
        after = [on_disk("jobs_total"), on_disk("job_seconds_count"), on_disk("job_seconds_sum")]
        print(json.dumps({"class": values.ValueClass.__name__, "before": before,
                          "in_process": in_process, "after": after}))
        """,
    )
    assert out["class"] == "BufferedValue"
    # Counters and histograms wait for the flush; a gauge is written when set.
    assert out["before"] == [0.0, 0.0, 7.0]
    assert out["in_process"] == 3.0
    assert out["after"] == [3.0, 1.0, 0.5]


def test_the_flusher_writes_within_the_interval_and_exit_writes_the_rest(tmp_path):
    out = run(
        tmp_path,
        """
        c = Counter("jobs_total", "jobs")
        c.inc()
        deadline = time.monotonic() + 5
        while on_disk("jobs_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        c.inc(41)  # left for the exit
        print(json.dumps({"flushed": on_disk("jobs_total")}))
        """,
        interval="200",
    )
    assert out["flushed"] == 1.0
    check = run(tmp_path, 'print(json.dumps({"total": on_disk("jobs_total")}))')
    assert check["total"] == 42.0  # the atexit flush wrote the last 41


def test_a_forked_child_counts_only_its_own(tmp_path):
    out = run(
        tmp_path,
        """
        c = Counter("jobs_total", "jobs")
        c.inc(10)  # pending in the parent when it forks
        pid = os.fork()
        if pid == 0:
            c.inc(1)
            buffered.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        buffered.flush()
        print(json.dumps({"total": on_disk("jobs_total"), "files": len(os.listdir(
            os.environ["PROMETHEUS_MULTIPROC_DIR"]))}))
        """,
    )
    assert out["total"] == 11.0  # the parent's 10 once (written before the fork), the child's 1
    assert out["files"] == 2  # one counter file per process


def test_an_interval_of_zero_writes_every_increment_at_once(tmp_path):
    out = run(
        tmp_path,
        """
        c = Counter("jobs_total", "jobs")
        c.inc(3)
        print(json.dumps({"class": values.ValueClass.__name__, "on_disk": on_disk("jobs_total")}))
        """,
        interval="0",
    )
    assert out == {"class": "MmapedValue", "on_disk": 3.0}
