"""One Azurite for the whole session; each test gets its own fresh container (``raw``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.azure.server import AzuriteServer, AzuriteUnavailable, azurite
from tests.servers import unavailable


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    try:
        with azurite(tmp_path_factory.mktemp("azurite")) as server:
            yield server
    except AzuriteUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def raw(azurite_server: AzuriteServer) -> dict[str, str]:
    """The config of an ``azure`` destination on Azurite, in a container of its own."""
    return {
        "storage_account": azurite_server.account_name,
        "storage_access_key": azurite_server.account_key,
        "container": f"t-{uuid.uuid4().hex[:16]}",
        "path": "service/redis",
        "endpoint": azurite_server.account_url,
    }
