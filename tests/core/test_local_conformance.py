"""The built-in ``local`` destination passes the shared conformance suite."""

import uuid
from pathlib import Path

import pytest

from service_backup.testing import DestinationSuite, MiB


class TestLocalConformance(DestinationSuite):
    destination_type = "local"
    large_file_size = 80 * MiB
    chunk_size = MiB  # the copy buffer
    max_rss_growth = 24 * MiB

    @pytest.fixture
    def destination_config(self, tmp_path: Path):
        yield {"path": str(tmp_path / f"backups-{uuid.uuid4().hex}" / "nested")}

    @pytest.fixture
    def unreachable_config(self, tmp_path: Path):
        # The local equivalent of a dead endpoint: a folder below a regular file.
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where a folder should be")
        return {"path": str(blocker / "backups")}
