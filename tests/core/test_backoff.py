"""``backoff.retry``: the one retry loop, checked on a virtual clock (waits counted, not slept)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from service_backup.backoff import retry
from tests.clock import VirtualClock


class Flaky(Exception):
    pass


class Broken(Exception):
    pass


def failing(times: int, error: type[Exception] = Flaky) -> tuple[Callable[[], str], list[int]]:
    """A call that raises ``error`` ``times`` times, then answers; and its attempt counter."""
    calls = [0]

    def call() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise error(f"attempt {calls[0]}")
        return "ok"

    return call, calls


def run(call: Callable[[], str], clock: VirtualClock, **kwargs: object) -> str:
    options: dict[str, object] = {"deadline": 60.0, "first": 1.0, "cap": 16.0, **kwargs}
    return retry(
        call,
        retryable=lambda exc: isinstance(exc, Flaky),
        clock=clock.monotonic,
        sleep=clock.sleep,
        **options,  # type: ignore[arg-type]
    )


def test_waits_double_up_to_the_cap_until_the_call_succeeds() -> None:
    clock = VirtualClock()
    call, calls = failing(6)
    assert run(call, clock) == "ok"
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0], "waits must double from 1 s to 16 s"
    assert calls[0] == 7


def test_a_failure_that_is_not_retryable_is_raised_at_once() -> None:
    clock = VirtualClock()
    call, calls = failing(1, Broken)
    with pytest.raises(Broken, match="attempt 1"):
        run(call, clock)
    assert (calls[0], clock.waits) == (1, []), "a non-retryable failure must not be retried"


def test_gives_up_when_the_next_wait_would_pass_the_deadline() -> None:
    clock = VirtualClock()
    call, calls = failing(100)
    with pytest.raises(Flaky, match="attempt 4"):  # the last exception, unchanged
        run(call, clock, deadline=10.0)
    # 1 + 2 + 4 = 7 s; 8 more would end after 10 s: no fourth wait.
    assert clock.waits == [1.0, 2.0, 4.0] and calls[0] == 4


def test_final_at_deadline_cuts_the_last_wait_for_one_attempt_at_the_deadline() -> None:
    clock = VirtualClock()
    call, calls = failing(100)
    told: list[tuple[str, float]] = []
    with pytest.raises(Flaky, match="attempt 8"):
        run(
            call,
            clock,
            final_at_deadline=True,
            on_retry=lambda exc, wait: told.append((str(exc), wait)),
        )
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 13.0], "last wait must be cut to 13 s"
    assert clock.now == 1060.0 and calls[0] == 8, "the final attempt must happen at the deadline"
    assert told[0] == ("attempt 1", 1.0) and told[-1] == ("attempt 7", 13.0), told


def test_stop_ends_the_waiting_and_raises_the_last_failure() -> None:
    stop = threading.Event()
    call, calls = failing(100)

    def call_then_stop() -> str:
        stop.set()  # shutdown arrives during the first attempt
        return call()

    with pytest.raises(Flaky, match="attempt 1"):
        retry(call_then_stop, retryable=lambda e: True, deadline=60.0, first=30.0, stop=stop)
    assert calls[0] == 1, "a set stop event must end the retries without another attempt"
