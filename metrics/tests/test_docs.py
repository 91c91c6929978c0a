"""docs/metrics.md documents every family of the DESIGN table and every setting."""

from __future__ import annotations

from pathlib import Path

from .design import DESIGN_FAMILIES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_design_family_is_documented():
    text = DOCS.read_text()
    missing = [name for name in DESIGN_FAMILIES if f"`{name}`" not in text]
    assert missing == []


def test_settings_are_documented():
    text = DOCS.read_text()
    for setting in (
        "ENABLE_METRICS",
        "METRICS_COLLECTION_INTERVAL",
        "METRICS_TOKEN",
        "METRICS_AUTH_FAILURE_IPS",
        "WORKER_METRICS_PORT",
        "PROMETHEUS_MULTIPROC_DIR",
    ):
        assert setting in text, setting
