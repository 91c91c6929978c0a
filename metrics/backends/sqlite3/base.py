from __future__ import annotations

from django.db.backends.sqlite3 import base

from metrics.storage import DatabaseMetricsMixin


class DatabaseWrapper(DatabaseMetricsMixin, base.DatabaseWrapper):
    pass
