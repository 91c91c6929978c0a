"""The incremental multiprocess renderer says exactly what prometheus_client says."""

from __future__ import annotations

import math
import subprocess
import sys

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from metrics.multiprocess_text import MultiProcessTextRenderer

# A writer process in multiprocess mode: the same families in every writer, with
# values and label sets that differ by writer, and label values that need escaping.
WRITER = r"""
import sys
from prometheus_client import Counter, Gauge, Histogram, Summary

n = int(sys.argv[1])
requests = Counter("t_requests_total", "Requests.\nTwo lines \\ backslash.", ["tenant_id", "path"])
latency = Histogram("t_latency_seconds", "Latency.", ["tenant_id"], buckets=(0.1, 0.5, 1.0))
plain = Counter("t_plain_total", "No labels.")
live = Gauge("t_live", "Live gauge.", ["tenant_id"], multiprocess_mode="livesum")
summary = Summary("t_summary_seconds", "A summary.")
for i in range(n):
    requests.labels(str(i % 3), 'a"quoted"\\path\n').inc(n)
    requests.labels("é", "plain").inc(0.5)
    latency.labels(str(i % 2)).observe(0.05 * (i + n))
    plain.inc()
    live.labels("1").set(n)
    summary.observe(0.2)
if n == 3:
    latency.labels("only-in-three").observe(7)
"""


def write(directory, n: int) -> None:
    subprocess.run(
        [sys.executable, "-c", WRITER, str(n)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"},
        check=True,
    )


def same(ours: dict, theirs: dict) -> bool:
    """Same series, same values (sums may differ in the last bit: files are added in
    another order)."""
    return ours.keys() == theirs.keys() and all(
        math.isclose(ours[k], theirs[k], rel_tol=1e-12) for k in ours
    )


def samples(text: str, types=("counter", "histogram")) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        if family.type not in types:
            continue
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def reference(directory) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


def test_same_samples_as_prometheus_client_and_incremental(tmp_path):
    renderer = MultiProcessTextRenderer(str(tmp_path))
    write(tmp_path, 2)
    write(tmp_path, 3)
    first = renderer.render()
    assert same(samples(first), samples(reference(tmp_path)))
    assert samples(first)[("t_plain_total", ())] == 5
    assert samples(first)[("t_latency_seconds_count", (("tenant_id", "only-in-three"),))] == 1

    # New processes, new series and new values: only the new entries are parsed.
    write(tmp_path, 4)
    second = renderer.render()
    assert same(samples(second), samples(reference(tmp_path)))
    assert samples(second)[("t_plain_total", ())] == 9
    # Gauges and summaries are not this renderer's: prometheus_client merges them.
    assert "t_live" not in second and "t_summary" not in second


def test_help_and_type_lines_match(tmp_path):
    write(tmp_path, 2)
    ours = MultiProcessTextRenderer(str(tmp_path)).render()
    theirs = reference(tmp_path)
    for line in ours.splitlines():
        if line.startswith("#"):
            assert line in theirs.splitlines(), line


def test_a_recreated_file_is_read_again(tmp_path):
    renderer = MultiProcessTextRenderer(str(tmp_path))
    write(tmp_path, 3)
    renderer.render()
    for path in tmp_path.iterdir():  # a restart that wiped the directory
        path.unlink()
    write(tmp_path, 2)
    assert same(samples(renderer.render()), samples(reference(tmp_path)))


def test_empty_directory(tmp_path):
    assert MultiProcessTextRenderer(str(tmp_path)).render() == ""
