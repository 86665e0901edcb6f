"""A session-wide OpenSSH sshd on a loopback port (see server.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.servers import unavailable

from .server import SshServer, sshd_server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    yield from serve_sshd(tmp_path_factory.mktemp("sshd"))


def serve_sshd(folder: Path, options: Sequence[str] = ()) -> Iterator[SshServer]:
    """A running sshd for a fixture to yield; one that cannot start is reported unavailable."""
    try:
        manager = sshd_server(folder, options)
        server = manager.__enter__()
    except Exception as exc:  # sshd missing, cannot bind, ssh-keygen absent...
        unavailable(f"OpenSSH sshd could not start: {exc}")
        raise
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)
