"""The stall rule every destination applies to its transfers, like curl's speed-limit/time.

A transfer whose throughput stays below ``floor`` bytes per second for ``period`` seconds is
aborted, and so is every transfer once service-backup shuts down. The SDKs only bound single
socket operations (a server that trickles one byte every few seconds never trips a read
timeout), so the guard watches progress from outside: a plugin reports the bytes it moves
(``progress``) and gives an ``abort`` callback that makes the blocked SDK call fail (close
the connection, cancel the transfer). The plugin then raises ``guard.error()`` instead of the
SDK's own exception, so the operator reads "stalled" or "shutting down", not a socket error.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from .errors import DestinationError

#: Defaults a slow WAN passes and a trickling or black-holed endpoint fails well inside 90 s.
DEFAULT_STALL_SECONDS = 60
DEFAULT_STALL_MIN_BYTES_PER_SECOND = 1024


@attrs.frozen
class StallRule:
    """``stall_timeout_seconds`` / ``stall_min_bytes_per_second`` from a destination's config."""

    period: float = DEFAULT_STALL_SECONDS
    floor: float = DEFAULT_STALL_MIN_BYTES_PER_SECOND


class StallGuard:
    """Watches one transfer (or one destination's transfers) on a background timer."""

    def __init__(
        self,
        what: str,
        rule: StallRule,
        stop: threading.Event | None = None,
        *,
        tick: float = 1.0,
    ) -> None:
        self.what = what
        self.rule = rule
        self.stop = stop or threading.Event()
        self.tick = tick
        self._lock = threading.Lock()
        self._started = time.monotonic()
        #: Bytes moved per moment, the last ``period`` seconds of them: a sliding window, so
        #: a burst into socket buffers just before the line goes quiet cannot hide the stall
        #: for a second period (a fixed window could take twice ``period`` to notice).
        self._moved: collections.deque[tuple[float, int]] = collections.deque()
        self._in_window = 0
        self.reason: str | None = None

    def progress(self, nbytes: int) -> None:
        """Count bytes moved; raise at once when the transfer was already aborted."""
        with self._lock:
            self._moved.append((time.monotonic(), nbytes))
            self._in_window += nbytes
        if self.reason is not None or self.stop.is_set():
            raise self.error()

    def _stalled(self) -> str | None:
        if self.stop.is_set():
            return "interrupted: service-backup is shutting down"
        now = time.monotonic()
        with self._lock:
            while self._moved and self._moved[0][0] < now - self.rule.period:
                self._in_window -= self._moved.popleft()[1]
            if now - self._started < self.rule.period:
                return None
            rate = self._in_window / self.rule.period
        if rate < self.rule.floor:
            return (
                f"stalled: less than {self.rule.floor:.0f} bytes/s for "
                f"{self.rule.period:.0f}s ({rate:.0f} bytes/s)"
            )
        return None

    def error(self) -> DestinationError:
        return DestinationError(f"{self.what}: {self.reason or self._stalled() or 'aborted'}")

    @property
    def tripped(self) -> bool:
        return self.reason is not None

    @contextmanager
    def watch(self, abort: Callable[[], None]) -> Iterator[StallGuard]:
        """Run ``abort`` (once) from a timer thread when the transfer stalls or shutdown starts."""
        done = threading.Event()
        with self._lock:
            self._started = time.monotonic()
            self._moved.clear()
            self._in_window = 0

        def watcher() -> None:
            while not done.wait(self.tick):
                reason = self._stalled()
                if reason is not None:
                    self.reason = reason
                    abort()
                    return

        thread = threading.Thread(target=watcher, name=f"stall-{self.what}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
