from __future__ import annotations

from django.db.backends.postgresql import base

from metrics.storage import DatabaseMetricsMixin


class DatabaseWrapper(DatabaseMetricsMixin, base.DatabaseWrapper):
    pass
