"""The shared destination suite against moto (signatures and IAM policies enforced)."""

from __future__ import annotations

from typing import Any

import pytest

from service_backup.testing import DestinationSuite, MiB
from tests.servers import free_port


class TestS3Conformance(DestinationSuite):
    destination_type = "s3"
    #: Above the 8 MiB multipart threshold: s3transfer uploads it in 8 MiB parts. Big enough
    #: that holding the file (or a good part of it) in memory fails ``max_rss_growth``.
    large_file_size = 192 * MiB
    chunk_size = 8 * MiB  # multipart threshold and part size
    #: Each part in flight is held in memory once (read once, then sent, signed and hashed
    #: from there): 8 parts x 8 MiB, plus some slack. The same for any file size.
    max_rss_growth = 80 * MiB
    listing_entries = 1001  # S3 pages hold 1000 keys: two real pages
    listing_page_size = None

    @pytest.fixture
    def destination_config(self, s3_config: dict[str, Any]) -> Any:
        yield s3_config

    @pytest.fixture
    def wrong_credentials_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        return {**destination_config, "secret_access_key": "wrong-secret-key-for-test"}

    @pytest.fixture
    def unreachable_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        return {**destination_config, "endpoint_url": f"http://127.0.0.1:{free_port()}"}

    @pytest.fixture
    def promote_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        """Promotion by server-side copy is opt-in: the rename tests run with it on."""
        return {**destination_config, "promote_by_copy": True}
