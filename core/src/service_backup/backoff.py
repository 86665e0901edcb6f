"""Bounded retry with exponential back-off: the one loop every plugin and alerter uses.

A call is retried while ``retryable(exc)`` says so and the next attempt can start before
``deadline`` seconds have passed since the first; waits double from ``first`` up to ``cap``.
With ``final_at_deadline`` the last wait is cut short instead, so that one final attempt
happens right at the deadline (the CF alerter's protocol: every second of ``timeout_seconds``
is used). The last exception is re-raised unchanged, so callers keep their own one-line errors.
``stop`` (an Event) ends the waiting early, e.g. when the daemon shuts down; ``on_retry`` is
told each retryable failure and the wait before the next attempt (for a debug log line).
``clock`` and ``sleep`` are the time the loop sees: tests pass a virtual clock to check the
waits without sleeping them (a ``sleep`` given replaces the waiting on ``stop``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry(
    call: Callable[[], T],
    *,
    retryable: Callable[[BaseException], bool],
    deadline: float,
    first: float = 1.0,
    cap: float = 16.0,
    stop: threading.Event | None = None,
    final_at_deadline: bool = False,
    on_retry: Callable[[BaseException, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
) -> T:
    started = clock()
    wait = first
    while True:
        try:
            return call()
        except Exception as exc:
            left = deadline - (clock() - started)
            if not retryable(exc):
                raise
            if final_at_deadline:
                if left <= 0:
                    raise
                pause = min(wait, left)
            elif left <= wait:
                raise
            else:
                pause = wait
            if on_retry is not None:
                on_retry(exc, pause)
            if sleep is not None:
                sleep(pause)
            elif stop is not None:
                if stop.wait(pause):
                    raise
            else:
                time.sleep(pause)
            wait = min(wait * 2, cap)
