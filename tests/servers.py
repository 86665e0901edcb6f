"""Helpers for the real servers tests start on loopback (free ports, readiness, CI policy).

No pytest import at module level: the pytest-free server launchers (and bench/) use it too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(reason: str) -> None:
    """A server the tests need could not start: a failure under CI, a skip on a laptop."""
    import pytest

    if IN_CI:
        pytest.fail(f"test server unavailable: {reason}", pytrace=False)
    pytest.skip(f"test server unavailable: {reason}")


def wait_for_port(
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    process: subprocess.Popen | None = None,
    ready: Callable[[], bool] | None = None,
) -> bool:
    """Poll until ``host:port`` accepts connections (and ``ready()`` is true), or give up.

    Polling a socket is the event here: a server has no other way to say it is listening.
    Returns False when the process died or the time ran out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                if ready is None or ready():
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
