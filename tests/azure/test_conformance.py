"""The shared destination suite against Azurite."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service_backup.testing import DestinationSuite, MiB
from tests.azure.server import AzuriteServer
from tests.servers import free_port


class TestAzureConformance(DestinationSuite):
    destination_type = "azure"
    large_file_size = 80 * MiB  # well above the 4 MiB single-put limit: block uploads
    chunk_size = 4 * MiB  # single-put limit and block size
    max_rss_growth = 32 * MiB  # 4 blocks of 4 MiB in flight, plus the SDK's copies
    listing_entries = 1001
    listing_page_size = 250  # several pages without writing 5,000+ blobs

    @pytest.fixture
    def destination_config(self, azurite_server: AzuriteServer) -> Iterator[dict[str, Any]]:
        yield {
            "storage_account": azurite_server.account_name,
            "storage_access_key": azurite_server.account_key,
            "container": f"conf-{uuid.uuid4().hex[:20]}",
            "path": "service/backups",
            "endpoint": azurite_server.account_url,
        }

    @pytest.fixture
    def wrong_credentials_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        wrong_key = base64.b64encode(b"not the key of devstoreaccount1 " * 2).decode()
        return {**destination_config, "storage_access_key": wrong_key}

    @pytest.fixture
    def unreachable_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        return {
            **destination_config,
            "endpoint": f"http://127.0.0.1:{free_port()}/devstoreaccount1",
        }

    @pytest.fixture
    def promote_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        """Promotion by server-side copy is opt-in: the rename tests run with it on."""
        return {**destination_config, "promote_by_copy": True}
