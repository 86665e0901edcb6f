"""Benchmark harness: ``manual-backup`` against the tools operators would otherwise use.

``python -m bench`` (``make bench``) starts the same real servers the tests use on loopback,
generates deterministic data sets under ``bench/work/``, uploads each set to each destination
with ``manual-backup`` and with the peer tools side by side, measures every upload as a whole
process through GNU ``time -v``, and writes one table to ``bench/results/latest.md``.
See ``docs/benchmarks.md`` for what is measured and why.
"""
