"""The shared conformance suite, run against a live WebDAV server: all it takes."""

import pytest
from webdav_server import free_port

from service_backup.testing import DestinationSuite, MiB


class TestWebDAVConformance(DestinationSuite):
    destination_type = "webdav"
    large_file_size = 80 * MiB  # streamed in 1 MiB pieces: any size above a few MiB proves it
    max_rss_growth = 24 * MiB
    chunk_size = MiB  # the PUT body is sent in 1 MiB pieces

    @pytest.fixture
    def destination_config(self, fresh_config):
        yield fresh_config  # a new collection per test; the server's folder goes at session end

    @pytest.fixture
    def wrong_credentials_config(self, destination_config):
        return {**destination_config, "password": "not-the-password"}

    @pytest.fixture
    def unreachable_config(self, destination_config):
        url = destination_config["url"]
        path = url.split("/", 3)[3]
        return {**destination_config, "url": f"http://127.0.0.1:{free_port()}/{path}"}
