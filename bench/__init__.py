"""Cadre's benchmarks: ``make bench`` writes bench/results.json and prints a table."""
