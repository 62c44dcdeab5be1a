"""Benchmarks (run by hand or `make bench`; not timed tests). Results are appended to benchmarks/results.md."""
