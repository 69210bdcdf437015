"""Benchmarks of ADIT's DICOM layer against real peers: ``uv run cli bench --help``.

Each benchmark appends a dated section to ``bench/RESULTS.md``; ``bench/README.md`` says how to
run them and how to read the figures.
"""
