"""Benchmarks (``coldstream bench ...``): each prints a table and writes JSON under ``reports/``.
Figures are measured, never asserted as wall-clock limits in tests."""
