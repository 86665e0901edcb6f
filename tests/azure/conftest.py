"""One Azurite for the whole session; each test gets its own fresh container."""

from __future__ import annotations

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
