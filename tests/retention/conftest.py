"""Every real destination server, for tests that run the same scenario on each type.

The session servers are the ones the per-plugin tests start (imported fixtures); each
parametrized ``destination_entry`` is a fresh, empty location on one of them.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.azure.conftest import azurite_server  # noqa: F401 - session fixture
from tests.azure.server import AzuriteServer
from tests.gcs.conftest import gcs_server  # noqa: F401 - session fixture
from tests.gcs.server import GCSServer
from tests.s3.conftest import moto  # noqa: F401 - session fixture
from tests.s3.server import MotoServer
from tests.scp.conftest import sshd  # noqa: F401 - session fixture
from tests.scp.server import SshServer

TYPES = ("local", "s3", "azure", "gcs", "scp")


def destination_config(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:16]
    if kind == "local":
        return {"path": str(tmp_path / "store")}
    if kind == "s3":
        server: MotoServer = request.getfixturevalue("moto")
        return {
            "bucket_name": f"ret-{unique}",
            "bucket_path": "backups",
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "endpoint_url": server.endpoint,
        }
    if kind == "azure":
        azurite: AzuriteServer = request.getfixturevalue("azurite_server")
        return {
            "storage_account": azurite.account_name,
            "storage_access_key": azurite.account_key,
            "container": f"ret-{unique}",
            "path": "backups",
            "endpoint": azurite.account_url,
        }
    if kind == "gcs":
        gcs: GCSServer = request.getfixturevalue("gcs_server")
        return gcs.config(f"ret-{unique}", bucket_path="backups")
    ssh: SshServer = request.getfixturevalue("sshd")
    return {
        "user": ssh.user,
        "server": ssh.host,
        "port": ssh.port,
        "destination": str(ssh.root / f"ret-{unique}" / "backups"),
        "fingerprint": ssh.keyscan,
        "key": ssh.client_key,
    }


@pytest.fixture(params=TYPES)
def destination_entry(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """``{"type", "name", "config"}`` of an empty location on one real server."""
    kind = request.param
    return {
        "type": kind,
        "name": f"{kind}-dest",
        "config": destination_config(kind, request, tmp_path),
    }
