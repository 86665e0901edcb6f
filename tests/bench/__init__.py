"""Tests of the benchmark harness (``bench``), and what they share."""

from __future__ import annotations

from bench.measure import Summary


def summary_of(walls: tuple[float, ...]) -> Summary:
    """A cell's figures from its runs' walls: the median (upper, for an even count) as the
    cell's wall, every run kept for its range."""
    median = sorted(walls)[len(walls) // 2]
    return Summary(runs=len(walls), failed=0, wall=median, walls=walls, cpu=1.0, peak_rss_kib=1024)
