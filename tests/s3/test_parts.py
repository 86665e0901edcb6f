"""The multipart path against moto: each byte read from the file once, hashed right in any order.

A part is read whole through the Source and sent, signed and checked from that one buffer
(``service_backup_s3._parts``). These tests count what goes through the Source and make parts
finish out of order with botocore's own event hooks on the real client (nothing is mocked).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

from service_backup.errors import DestinationError
from service_backup.layout import MiB
from service_backup.source import Source, SourceFile
from service_backup.upload import upload_one
from service_backup_s3.config import S3Config
from service_backup_s3.destination import PART_SIZE

from .server import MotoServer
from .test_s3 import CorruptingRelay, open_destination

#: Three parts, the last one short.
SIZE = 2 * PART_SIZE + 3 * MiB


class CountingSource(Source):
    """A file's Source that counts the bytes it reads for the destination, by offset."""

    def __init__(self, file: SourceFile) -> None:
        super().__init__(file.display, file.size, path=file.path, mtime_ns=file.mtime_ns)
        self.reads: list[tuple[int, int]] = []
        self.threads: set[str] = set()
        self._count_lock = threading.Lock()

    def read_at(self, offset: int, length: int) -> bytes:
        data = super().read_at(offset, length)
        with self._count_lock:
            self.reads.append((offset, len(data)))
            self.threads.add(threading.current_thread().name)
        return data


def source_file(tmp_path: Path, size: int) -> tuple[SourceFile, bytes]:
    data = os.urandom(size)
    path = tmp_path / "dump.rdb"
    path.write_bytes(data)
    st = path.stat()
    return SourceFile(path=path, relative="dump.rdb", size=size, mtime_ns=st.st_mtime_ns), data


def stored(admin: Any, bucket: str, key: str) -> bytes:
    return bytes(admin.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_multipart_upload_reads_each_byte_once(
    s3_config: dict[str, Any], s3_admin: Any, tmp_path: Path
) -> None:
    file, data = source_file(tmp_path, SIZE)
    source = CountingSource(file)
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        dest.write("2026/12/01/dump.rdb", source)
    read = sorted(source.reads)
    assert sum(length for _, length in read) == SIZE, (
        f"the upload read {sum(n for _, n in read)} bytes through the Source for a {SIZE}-byte "
        f"file (reads by offset: {read}): a part was read more than once"
    )
    assert read == [(0, PART_SIZE), (PART_SIZE, PART_SIZE), (2 * PART_SIZE, 3 * MiB)], (
        f"each part should be read whole, once: {read}"
    )
    assert len(source.threads) == 1, (
        f"parts were read on threads {sorted(source.threads)}: every part buffer should be "
        "allocated by the one part-reading thread (one malloc arena, freed parts reused)"
    )
    assert source.sha256 == hashlib.sha256(data).hexdigest(), "sha256 differs from the file's"
    bucket = s3_config["bucket_name"]
    assert stored(s3_admin, bucket, "backups/redis/2026/12/01/dump.rdb") == data


def test_sha256_is_right_when_parts_finish_out_of_order(
    s3_config: dict[str, Any], s3_admin: Any, tmp_path: Path
) -> None:
    """Part 1 is held back until part 2 is stored: the file's hash still comes out in order.

    Part 2 is read (and handed to the Source) before part 1; part 3, two parts ahead of the
    first unread byte, waits for part 1's read (``READ_AHEAD_PARTS``).
    """
    file, data = source_file(tmp_path, SIZE)
    part_2_stored = threading.Event()
    finished: list[int] = []
    lock = threading.Lock()

    def hold_first_part(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["test_part_number"] = params["PartNumber"]
        if params["PartNumber"] == 1 and not part_2_stored.wait(30):
            raise AssertionError("part 2 was never stored while part 1 waited")

    def part_stored(context: dict[str, Any], **_: Any) -> None:
        with lock:
            finished.append(context["test_part_number"])
            if context["test_part_number"] == 2:
                part_2_stored.set()

    with open_destination(s3_config) as dest:
        dest.ensure_location()
        events = dest.client.meta.events
        # Before the plugin's own handler, which reads the part for its Content-MD5.
        events.register_first("before-parameter-build.s3.UploadPart", hold_first_part)
        events.register("after-call.s3.UploadPart", part_stored)
        result = upload_one(dest, "2026/12/01/dump.rdb", file)
    assert finished.index(2) < finished.index(1), f"parts finished as {finished}"
    assert sorted(finished) == [1, 2, 3], f"parts finished as {finished}"
    assert result.sha256 == hashlib.sha256(data).hexdigest(), (
        "the sha256 recorded for the manifest is not the file's when parts finish out of order"
    )
    bucket = s3_config["bucket_name"]
    assert stored(s3_admin, bucket, "backups/redis/2026/12/01/dump.rdb") == data


def test_parts_are_signed_without_a_second_payload_hash(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    """Over plain HTTP too, a part is signed as over HTTPS: its signed Content-MD5 covers it.

    moto here checks signatures (``auth=True``): the upload going through shows the store
    accepts ``UNSIGNED-PAYLOAD`` with the MD5; the other requests keep their payload hash.
    """
    data = os.urandom(PART_SIZE + MiB)
    seen: list[tuple[str, dict[str, Any]]] = []
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        dest.client.meta.events.register(
            "before-send.s3",
            lambda request, **_: seen.append((request.url, dict(request.headers))),
        )
        dest.write("2026/12/01/dump.rdb", Source.from_bytes(data))
    parts = [h for url, h in seen if "partNumber=" in url]
    others = [h for url, h in seen if "partNumber=" not in url]
    assert len(parts) == 2, f"expected two part requests, saw {[u for u, _ in seen]}"
    for headers in parts:
        assert headers.get("Content-MD5"), "a part was sent without its Content-MD5"
        assert headers["X-Amz-Content-SHA256"] == b"UNSIGNED-PAYLOAD", headers
    assert all(h["X-Amz-Content-SHA256"] != b"UNSIGNED-PAYLOAD" for h in others), (
        "a request other than a part lost its payload hash"
    )
    bucket = s3_config["bucket_name"]
    assert stored(s3_admin, bucket, "backups/redis/2026/12/01/dump.rdb") == data


# ---------------------------------------------------------------------- per-part checksums


def part_requests(dest: Any) -> list[tuple[str, str, dict[str, Any], bytes]]:
    """What the client sends, as (method, url, headers, body), recorded as it goes out."""
    seen: list[tuple[str, str, dict[str, Any], bytes]] = []

    def record(request: Any, **_: Any) -> None:
        body = request.body
        if hasattr(body, "read"):
            position = body.tell()
            body = body.read()
            request.body.seek(position)
        seen.append((request.method, request.url, dict(request.headers), bytes(body or b"")))

    dest.client.meta.events.register("before-send.s3", record)
    return seen


def header(headers: dict[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def test_crc32c_parts_carry_their_checksum_and_no_md5(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    """``upload_checksum: crc32c``: each part carries its CRC32C (Castagnoli), declared at create.

    S3 verifies the header and answers it back; s3transfer lists the answers at completion.
    """
    assert google_crc32c.value(b"123456789") == 0xE3069283, "not the Castagnoli CRC (CRC32C)"
    data = os.urandom(PART_SIZE + 3 * MiB)
    with open_destination({**s3_config, "upload_checksum": "crc32c"}) as dest:
        dest.ensure_location()
        seen = part_requests(dest)
        dest.write("2026/12/01/dump.rdb", Source.from_bytes(data))
    creates = [h for method, url, h, _ in seen if method == "POST" and url.endswith("?uploads")]
    assert len(creates) == 1, (
        f"expected one CreateMultipartUpload, saw {[u for _, u, _, _ in seen]}"
    )
    assert header(creates[0], "x-amz-checksum-algorithm") == "CRC32C", creates[0]
    parts = [(h, body) for _, url, h, body in seen if "partNumber=" in url]
    assert len(parts) == 2, f"expected two part requests, saw {[u for _, u, _, _ in seen]}"
    for headers, body in parts:
        expected = base64.b64encode(google_crc32c.value(body).to_bytes(4, "big")).decode()
        assert header(headers, "x-amz-checksum-crc32c") == expected, "wrong or missing CRC32C"
        assert header(headers, "content-md5") is None, "a CRC32C part still computed its MD5"
    completes = [body for method, url, _, body in seen if method == "POST" and "uploadId=" in url]
    assert completes and completes[0].count(b"<ChecksumCRC32C>") == 2, (
        "the completion does not list each part's CRC32C"
    )
    bucket = s3_config["bucket_name"]
    assert stored(s3_admin, bucket, "backups/redis/2026/12/01/dump.rdb") == data


def test_default_upload_checksum_is_crc32c_on_aws_and_md5_for_compatible_stores() -> None:
    def config(**raw: str) -> S3Config:
        return S3Config(bucket_name="backups", bucket_path="redis", **raw)  # type: ignore[arg-type]

    compatible = "http://127.0.0.1:9000"
    assert config().effective_upload_checksum == "crc32c", "AWS: S3 verifies and answers CRC32C"
    assert config(endpoint_url=compatible).effective_upload_checksum == "md5", (
        "an S3-compatible store must get Content-MD5 unless told otherwise"
    )
    chosen = config(endpoint_url=compatible, upload_checksum="crc32c")
    assert chosen.effective_upload_checksum == "crc32c", "upload_checksum was not followed"
    assert config(upload_checksum="md5").effective_upload_checksum == "md5"


@pytest.mark.parametrize("size", [MiB, PART_SIZE + MiB], ids=["put", "multipart"])
def test_a_store_answering_no_checksum_gets_the_etag_check(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any, size: int
) -> None:
    """A store that ignores the CRC32C header verified nothing: the body's MD5 must be its ETag."""
    port = int(moto.endpoint.rsplit(":", 1)[1])
    answered = b"x-amz-checksum-crc32c"
    relay = CorruptingRelay(
        port, b"GOOD-BACKUP-DATA", b"ROTTEN-BYTES-NOW", answer=(answered, b"x-amz-meta-ignored-12")
    )
    data = bytearray(os.urandom(size))
    data[size // 2 : size // 2 + 16] = b"GOOD-BACKUP-DATA"
    raw = {**s3_config, "endpoint_url": relay.endpoint, "upload_checksum": "crc32c"}
    try:
        with open_destination(raw) as dest:
            dest.ensure_location()
            with pytest.raises(DestinationError) as info:
                dest.write("corrupt.bin", Source.from_bytes(bytes(data)))
    finally:
        relay.close()
    assert relay.corrupted.is_set(), "the relay never saw the payload"
    assert "integrity check failed: the store reports MD5" in str(info.value), str(info.value)
    bucket = s3_config["bucket_name"]
    assert s3_admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "a corrupt object is left"
    assert not s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_crc32c_put_carries_its_checksum_and_no_md5(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    data = os.urandom(MiB + 5)
    with open_destination({**s3_config, "upload_checksum": "crc32c"}) as dest:
        dest.ensure_location()
        seen = part_requests(dest)
        dest.write("2026/12/01/small.rdb", Source.from_bytes(data))
    puts = [h for method, _, h, _ in seen if method == "PUT"]
    assert len(puts) == 1, f"expected one PutObject, saw {[u for _, u, _, _ in seen]}"
    expected = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    assert header(puts[0], "x-amz-checksum-crc32c") == expected, "wrong or missing CRC32C"
    assert header(puts[0], "content-md5") is None, "a CRC32C PUT still computed its MD5"
    bucket = s3_config["bucket_name"]
    assert stored(s3_admin, bucket, "backups/redis/2026/12/01/small.rdb") == data


def test_a_store_answering_another_checksum_fails_the_part(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    """The store's answer is what it computed from what it got: another value is corruption."""

    def store_saw_other_bytes(parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("ChecksumCRC32C"):
            parsed["ChecksumCRC32C"] = "AAAAAA=="

    with open_destination({**s3_config, "upload_checksum": "crc32c"}) as dest:
        dest.ensure_location()
        dest.client.meta.events.register_first("after-call.s3.UploadPart", store_saw_other_bytes)
        with pytest.raises(DestinationError) as info:
            dest.write("2026/12/01/dump.rdb", Source.from_bytes(os.urandom(PART_SIZE + MiB)))
    assert "integrity check failed: the store reports CRC32C AAAAAA==" in str(info.value), str(
        info.value
    )
    bucket = s3_config["bucket_name"]
    assert s3_admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "a failed object is left"
