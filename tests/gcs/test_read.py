"""Reading objects back from gcp-storage-emulator itself: one GET, checked, resumed safely.

The emulator names no generation in its answers and ignores one in a request, so a resumed
read there is unpinned and only its CRC32C check stands between the caller and an object
overwritten meanwhile: these tests hold that line on a real server (the pinned resume against
GCS's documented behaviour is in test_gcs.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.source import Source
from tests.faultproxy import FaultProxy, _reset, fault_proxy
from tests.gcs.server import GCSServer
from tests.gcs.test_gcs import open_destination

MiB = 1024 * 1024


def stored_file(server: GCSServer, bucket: str, name: str) -> Path:
    """Where the emulator keeps an object's bytes (it reads them from disk on every GET)."""
    path = server.folder / "data" / ".cloudstorage" / bucket / name
    assert path.is_file(), f"the emulator's layout changed: {path} is not there"
    return path


def test_a_missing_object_is_named(gcs_config: dict[str, Any], bucket_name: str) -> None:
    with open_destination(gcs_config) as destination:
        destination.ensure_location()
        with pytest.raises(ObjectNotFound) as failure:
            destination.open_read("2026/12/01/nothing here.bin")
    message = str(failure.value)
    assert "2026/12/01/nothing here.bin" in message, f"the key is not named: {message}"
    assert bucket_name in message, f"the bucket is not named: {message}"


def test_stored_bytes_that_do_not_match_their_crc32c_fail_the_read(
    gcs_server: GCSServer, gcs_config: dict[str, Any], bucket_name: str
) -> None:
    data = bytes(range(256)) * 64
    with open_destination(gcs_config) as destination:
        destination.ensure_location()
        destination.write("rot.bin", Source.from_bytes(data))
        path = stored_file(gcs_server, bucket_name, "backups/redis/rot.bin")
        flipped = bytearray(path.read_bytes())
        flipped[100] ^= 0x01  # same size, one bit of rot
        path.write_bytes(bytes(flipped))
        with destination.open_read("rot.bin") as stream, pytest.raises(DestinationError) as failure:
            stream.read()
    message = str(failure.value)
    assert "checksum mismatch" in message, f"rotten bytes were not caught: {message}"
    assert f"{bucket_name}/backups/redis/rot.bin" in message, f"the object is not named: {message}"


@pytest.fixture
def proxy(gcs_server: GCSServer) -> Iterator[FaultProxy]:
    with fault_proxy(gcs_server.port) as running:
        yield running


@pytest.fixture
def proxied(gcs_server: GCSServer, bucket_name: str, proxy: FaultProxy) -> dict[str, Any]:
    return gcs_server.config(
        bucket_name, bucket_path="backups/redis", endpoint=f"http://127.0.0.1:{proxy.port}"
    )


def cut(proxy: FaultProxy) -> None:
    """Reset every connection through the proxy, as a failing network does, both sides."""
    for sock in list(proxy._sockets):
        _reset(sock)


def test_a_read_cut_mid_way_resumes_to_identical_bytes(
    proxied: dict[str, Any], proxy: FaultProxy
) -> None:
    data = bytes((i * 31) % 251 for i in range(8 * MiB))
    with open_destination(proxied) as destination:
        destination.ensure_location()
        destination.write("cut.bin", Source.from_bytes(data))
        with destination.open_read("cut.bin") as stream:
            head = stream.read(1000)
            cut(proxy)
            rest = stream.read()
    assert head + rest == data, "the resumed read returned other bytes than were stored"
    assert proxy.connections >= 2, "the read was not cut at all"


def test_an_object_overwritten_while_read_is_never_mixed_in(
    proxied: dict[str, Any], proxy: FaultProxy
) -> None:
    old = bytes((i * 31) % 251 for i in range(8 * MiB))
    new = bytes((i * 37) % 251 for i in range(8 * MiB))  # same size, other bytes
    with open_destination(proxied) as destination:
        destination.ensure_location()
        destination.write("moving.bin", Source.from_bytes(old))
        with destination.open_read("moving.bin") as stream:
            assert stream.read(1000) == old[:1000]
            cut(proxy)  # first: the emulator serves one request at a time
            destination.write("moving.bin", Source.from_bytes(new))
            with pytest.raises(DestinationError) as failure:
                stream.read()
    message = str(failure.value)
    assert "checksum mismatch" in message or "replaced" in message, (
        f"a read resumed across an overwrite did not fail as it should: {message}"
    )
    assert "moving.bin" in message, f"the object is not named: {message}"
