"""Traversion's metrics (docs/metrics.md).

Importing the package switches prometheus_client's multiprocess values to batched
writes (metrics/buffered.py) before any of the catalogue's metrics exist.
"""

from . import buffered

buffered.install()
