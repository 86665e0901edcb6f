"""The shared destination suite against a real OpenSSH sshd."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from service_backup.testing import DestinationSuite, MiB
from tests.servers import free_port

from .server import SshServer


def unauthorized_key() -> str:
    """A valid Ed25519 key the server has never seen."""
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


class TestScpConformance(DestinationSuite):
    destination_type = "scp"
    # No chunk threshold: every file streams the same way; 80 MiB is well above the window.
    large_file_size = 80 * MiB
    chunk_size = 255 * 1024  # one pipelined SFTP write request to OpenSSH (and the batch limit)
    max_rss_growth = 24 * MiB
    listing_entries = 1001
    listing_page_size = None  # SFTP has no client-chosen page size

    @pytest.fixture
    def destination_config(self, sshd: SshServer) -> Iterator[dict[str, Any]]:
        yield {
            "user": sshd.user,
            "server": sshd.host,
            "port": sshd.port,
            "destination": str(sshd.root / f"conformance-{uuid.uuid4().hex}" / "backups"),
            "fingerprint": sshd.keyscan,
            "key": sshd.client_key,
        }

    @pytest.fixture
    def wrong_credentials_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        return {**destination_config, "key": unauthorized_key()}

    @pytest.fixture
    def unreachable_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        return {**destination_config, "port": free_port()}
