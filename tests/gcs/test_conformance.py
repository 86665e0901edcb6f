"""The shared destination suite against gcp-storage-emulator, with real service-account tokens."""

from __future__ import annotations

from typing import Any

import pytest

from service_backup.testing import DestinationSuite, MiB
from tests.gcs.server import GCSServer
from tests.servers import free_port


class TestGCSConformance(DestinationSuite):
    destination_type = "gcs"
    # Large files are streamed in one request: RSS should not grow with the size at all.
    large_file_size = 160 * MiB
    chunk_size = 2 * MiB  # single-request limit (above: one streamed resumable request)
    max_rss_growth = 16 * MiB
    # The emulator is slow with many objects and ignores page sizes (one page per listing):
    # a few objects and a small page size keep the test cheap (see test_gcs for paging).
    listing_entries = 25
    listing_page_size = 10

    @pytest.fixture
    def destination_config(self, gcs_config: dict[str, Any]) -> dict[str, Any]:
        return gcs_config

    @pytest.fixture
    def wrong_credentials_config(
        self, destination_config: dict[str, Any], gcs_server: GCSServer
    ) -> dict[str, Any]:
        # A well-formed key the token endpoint does not know: Google answers invalid_grant.
        return {**destination_config, "service_account_json": gcs_server.unregistered_key_json()}

    @pytest.fixture
    def unreachable_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        return {**destination_config, "endpoint": f"http://127.0.0.1:{free_port()}"}

    @pytest.fixture
    def promote_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        """Promotion by server-side copy is opt-in: the rename tests run with it on."""
        return {**destination_config, "promote_by_copy": True}
