"""Benchmarks: `python -m bench list`."""
