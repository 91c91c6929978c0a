"""Django's database backends with the metrics of `metrics.storage.DatabaseMetricsMixin`.

settings.py selects them as ENGINE when ENABLE_METRICS is true.
"""
