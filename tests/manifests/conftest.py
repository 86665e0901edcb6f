"""Every destination type behind one ``backend`` fixture, each on its real server.

The session servers are the ones the per-plugin suites start (same fixture functions); a test
asks for ``backend`` and runs once per type, starting only the server that type needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.azure.conftest import azurite_server
from tests.gcs.conftest import gcs_server
from tests.s3.conftest import moto, new_bucket_name
from tests.scp.conftest import sshd

__all__ = ["azurite_server", "gcs_server", "moto", "sshd"]

TYPES = ("local", "s3", "azure", "gcs", "scp")


@attrs.frozen
class Backend:
    """One destination type on its server: ``fresh()`` is the ``config:`` of a new location."""

    type: str
    fresh: Callable[[], dict[str, Any]]
    server: Any = None


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend("local", lambda: {"path": str(tmp_path / f"dest-{uuid.uuid4().hex[:8]}")})


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server = request.getfixturevalue("moto")
    return Backend(
        "s3",
        lambda: {
            "bucket_name": new_bucket_name(),
            "bucket_path": "backups/redis",
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "endpoint_url": server.endpoint,
        },
        server,
    )


def _azure(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server = request.getfixturevalue("azurite_server")
    return Backend(
        "azure",
        lambda: {
            "storage_account": server.account_name,
            "storage_access_key": server.account_key,
            "container": f"mf-{uuid.uuid4().hex[:20]}",
            "path": "service/backups",
            "endpoint": server.account_url,
        },
        server,
    )


def _gcs(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server = request.getfixturevalue("gcs_server")
    return Backend(
        "gcs",
        lambda: server.config(f"sb-mf-{uuid.uuid4().hex[:16]}", bucket_path="backups/redis"),
        server,
    )


def _scp(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server = request.getfixturevalue("sshd")
    return Backend(
        "scp",
        lambda: {
            "user": server.user,
            "server": server.host,
            "port": server.port,
            "destination": str(server.root / f"mf-{uuid.uuid4().hex}" / "backups"),
            "fingerprint": server.keyscan,
            "key": server.client_key,
        },
        server,
    )


_MAKERS = {"local": _local, "s3": _s3, "azure": _azure, "gcs": _gcs, "scp": _scp}


@pytest.fixture(params=TYPES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _MAKERS[request.param](request, tmp_path)
