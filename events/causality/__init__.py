"""The causality engine: scoring (scoring.py), linking (engine.py), root causes
(rootcause.py), patterns (patterns.py) and the anomaly score (anomaly.py)."""
