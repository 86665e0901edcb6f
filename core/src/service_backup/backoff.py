"""Bounded retry with exponential back-off: the one loop every plugin and alerter uses.

A call is retried while ``retryable(exc)`` says so and the next attempt can start before
``deadline`` seconds have passed since the first; waits double from ``first`` up to ``cap``.
The last exception is re-raised unchanged, so callers keep their own one-line errors.
``stop`` (an Event) ends the waiting early, e.g. when the daemon shuts down.
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
) -> T:
    started = time.monotonic()
    wait = first
    while True:
        try:
            return call()
        except Exception as exc:
            left = deadline - (time.monotonic() - started)
            if not retryable(exc) or left <= wait:
                raise
            if stop is not None:
                if stop.wait(wait):
                    raise
            else:
                time.sleep(wait)
            wait = min(wait * 2, cap)
