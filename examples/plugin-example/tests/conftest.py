"""One WebDAV server for the whole test session; each test gets its own fresh collection."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from webdav_server import ServerUnavailable, WebDAVServer, webdav_server

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def dav() -> Iterator[WebDAVServer]:
    try:
        with webdav_server() as server:
            yield server
    except ServerUnavailable as exc:
        # In CI a missing server is a failure, never a silent skip.
        if IN_CI:
            pytest.fail(f"WebDAV test server unavailable: {exc}", pytrace=False)
        pytest.skip(f"WebDAV test server unavailable: {exc}")


@pytest.fixture
def fresh_config(dav: WebDAVServer) -> dict[str, str]:
    """A collection that does not exist yet, two levels deep (parents are created too)."""
    return dav.config(f"backups-{uuid.uuid4().hex[:12]}/service")
