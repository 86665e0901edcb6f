"""Session-scoped moto servers for the S3 tests.

``moto`` checks SigV4 signatures and IAM policies (``auth=True``), so wrong keys and missing
permissions fail as on AWS; ``moto_tls`` serves HTTPS with a certificate from a throwaway CA.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.servers import unavailable

from .server import MotoServer, ServerError, moto_server


def _start(
    tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any
) -> Iterator[MotoServer]:
    try:
        with moto_server(tmp_path_factory.mktemp(name), **kwargs) as server:
            yield server
    except ServerError as exc:  # raised before the yield only: the server never came up
        unavailable(f"moto server ({name}): {exc}")


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from _start(tmp_path_factory, "moto-auth", auth=True)


@pytest.fixture(scope="session")
def moto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from _start(tmp_path_factory, "moto-tls", tls=True)


@pytest.fixture
def s3_admin(moto: MotoServer) -> Any:
    """A boto3 client with the administrator's keys, to inspect what the product did."""
    client = boto3.client("s3", **moto.boto3_kwargs())
    yield client
    client.close()


def new_bucket_name() -> str:
    return f"sb-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def s3_config(moto: MotoServer) -> dict[str, Any]:
    """The ``config:`` of an s3 destination on the auth-checking server, bucket not created."""
    return {
        "bucket_name": new_bucket_name(),
        "bucket_path": "backups/redis",
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        "endpoint_url": moto.endpoint,
    }
