"""Benchmarks. Each module prints machine-readable JSON lines and compares against a baseline
measured in the same run (ratios, not absolute times). Run all: ``python -m bench``."""
