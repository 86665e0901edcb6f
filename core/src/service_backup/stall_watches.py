"""Stall guards for many short transfers without a timer thread started for each one.

``StallGuard.watch`` starts (and joins) a timer thread per transfer. For a 16 KiB object
that is about 0.1 ms of CPU, more while other readers hold the GIL: as much as the rest of
the plugin's own work on the object. Yet a guard cannot trip before its stall period has
passed (60 s by default); only shutdown trips it sooner. So a read needs its guard's timer
only once it has lasted a moment, or once shutdown starts.

``LateWatches`` keeps one thread per destination (while reads are in flight) that looks at
them every ``DELAY`` seconds and starts the guard's own ``watch`` for each read older than
that, and for every read once shutdown has begun. From then on the core guard does what it
always did. Starting the watch late resets its window at that moment, which loses nothing: the guard
judges the last ``period`` seconds once ``period`` has passed since the watch started, and
by then the window starts after the late start. A stall is reported at most twice ``DELAY``
later than a guard started with the read; shutdown aborts a read within the same bound plus
the guard's one-second tick.

It lives in core beside ``StallGuard`` so that every destination plugin with many short
transfers uses the same one (the GCS reader does).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from .stall import StallGuard

#: How long a read runs before its guard gets a timer thread of its own.
DELAY: Final = 0.25


class _Read:
    """One read in flight: its guard, how to abort it, and the guard's watch once started."""

    __slots__ = ("abort", "done", "guard", "lock", "since", "watching")

    def __init__(self, guard: StallGuard, abort: Callable[[], None]) -> None:
        self.guard = guard
        self.abort = abort
        self.since = time.monotonic()
        self.lock = threading.Lock()
        self.done = False
        self.watching: contextlib.ExitStack | None = None

    def start_watch(self) -> None:
        with self.lock:
            if self.done or self.watching is not None:
                return
            watching = contextlib.ExitStack()
            watching.enter_context(self.guard.watch(self.abort))
            self.watching = watching

    def finish(self) -> None:
        with self.lock:
            self.done = True
            watching, self.watching = self.watching, None
        if watching is not None:
            watching.close()  # joins the guard's timer thread


class LateWatches:
    """The reads of one destination, watched by one thread until they outlast ``DELAY``."""

    def __init__(self, stop: threading.Event, name: str, delay: float = DELAY) -> None:
        """``stop``: the destination's shutdown event; ``name``: the watcher thread's."""
        self._stop = stop
        self._name = name
        self._delay = delay
        self._lock = threading.Lock()
        self._reads: set[_Read] = set()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @contextlib.contextmanager
    def watch(self, guard: StallGuard, abort: Callable[[], None]) -> Iterator[StallGuard]:
        """Like ``guard.watch(abort)``: ``abort`` runs when the read stalls or shutdown starts."""
        read = _Read(guard, abort)
        with self._lock:
            closed = self._closed.is_set()
            self._reads.add(read)
            if self._thread is None and not closed:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        if closed or self._stop.is_set():
            read.start_watch()  # no shared thread to rely on, or shutdown already started
        try:
            yield guard
        finally:
            with self._lock:
                self._reads.discard(read)
            read.finish()

    def _run(self) -> None:
        """Every ``DELAY``: start the guards of the reads due; end when no read is left."""
        while not self._closed.wait(self._delay):
            stopping = self._stop.is_set()
            older = time.monotonic() - self._delay
            with self._lock:
                if not self._reads:
                    self._thread = None  # the next read starts a new one
                    return
                due = [r for r in self._reads if stopping or r.since <= older]
            for read in due:
                if read.watching is None:
                    read.start_watch()

    def close(self) -> None:
        """Stop the thread; a read still open (or opened later) gets its guard's own timer."""
        with self._lock:
            self._closed.set()
            thread, self._thread = self._thread, None
            left = list(self._reads)
        if thread is not None:
            thread.join()
        for read in left:
            read.start_watch()
