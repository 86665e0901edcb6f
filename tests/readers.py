"""Many readers at once over one destination, as ``restore`` reads: a shared queue of keys."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


def read_concurrently(
    keys: Iterable[str], readers: int, read_one: Callable[[str], None], timeout: float = 120
) -> None:
    """``read_one(key)`` for every key, on ``readers`` threads taking the next key as they
    finish one; the first exception a reader raised is raised here once all have ended."""
    pending = iter(keys)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                key = next(pending, None)
            if key is None:
                return
            try:
                read_one(key)
            except BaseException as exc:
                failures.append(exc)
                return

    workers = [threading.Thread(target=work, daemon=True) for _ in range(readers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout)
    assert not any(w.is_alive() for w in workers), f"a reader still ran after {timeout} s"
    if failures:
        raise failures[0]
