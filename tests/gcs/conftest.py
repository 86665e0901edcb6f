"""Session-scoped GCS emulator and token endpoint for the gcs tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.gcs.server import EmulatorUnavailable, GCSServer, gcs_emulator
from tests.servers import unavailable


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    try:
        with gcs_emulator(tmp_path_factory.mktemp("gcs")) as server:
            yield server
    except EmulatorUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def bucket_name() -> str:
    """A bucket that does not exist yet (GCS names: lowercase, 3-63 characters)."""
    return f"sb-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def gcs_config(gcs_server: GCSServer, bucket_name: str) -> dict[str, Any]:
    return gcs_server.config(bucket_name, bucket_path="backups/redis")


@pytest.fixture
def inspector(gcs_server: GCSServer) -> Iterator[storage.Client]:
    """An anonymous client to look at the emulator without adding token calls."""
    client = storage.Client(
        project=gcs_server.project_id,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_server.endpoint},
    )
    yield client
    client.close()
