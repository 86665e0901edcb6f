"""Peak resident memory of this process while something runs, sampled from /proc."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


@attrs.define
class RssPeak:
    baseline: int
    peak: int = 0

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


@contextmanager
def rss_peak(interval: float = 0.005) -> Iterator[RssPeak]:
    """Sample RSS every ``interval`` seconds in a thread; ``growth`` is peak minus baseline."""
    result = RssPeak(baseline=current_rss())
    result.peak = result.baseline
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            result.peak = max(result.peak, current_rss())

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result.peak = max(result.peak, current_rss())
