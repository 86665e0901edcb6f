"""A virtual clock for retry loops: waits are counted, not slept, so back-off is checked exactly."""

from __future__ import annotations


class VirtualClock:
    """Time that moves only when the code under test sleeps (``monotonic`` and ``sleep``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
