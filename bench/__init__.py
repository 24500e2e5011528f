"""Benchmarks (`make bench`): measured, reported, never asserted as timed tests."""
