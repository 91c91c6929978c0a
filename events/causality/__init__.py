"""The causality engine: scoring (scoring.py), linking a batch (engine.py), root causes
(rootcause.py), patterns (patterns.py), the anomaly score (anomaly.py), and the outbox
between ingestion and the engine (outbox.py)."""
