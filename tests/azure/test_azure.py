"""Azure-specific behaviour: endpoints, credentials, containers, integrity, retries, the CLI.

Everything runs against Azurite. What Azurite never does on its own (throttle, or receive a
corrupted body) is provoked by ``FaultyProxy``: a small reverse proxy on loopback in front of
it that forwards real requests and misbehaves on cue. The SDK is never patched.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from service_backup.config import parse_config, structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError, ObjectNotFound, SourceError
from service_backup.layout import MiB
from service_backup.plugins import load_registry
from service_backup.source import Source
from service_backup_azure._listing import parse_page
from service_backup_azure.destination import (
    LIST_PAGE_SIZE,
    MAX_BLOCK_SIZE,
    MAX_BLOCKS,
    MAX_SINGLE_PUT_SIZE,
    READ_WHOLE_MAX,
    RETRY_TOTAL,
    AzureDestination,
    block_size_for,
)
from tests.azure.server import AzuriteServer
from tests.core.cli import run_cli, write_config
from tests.servers import free_port

TODAY = time.strftime("%Y/%m/%d")
WRONG_KEY = base64.b64encode(b"a well-formed key that is not the account's").decode()


# ------------------------------------------------------------------------------ helpers
def open_destination(raw: dict[str, Any], name: str = "azure-test") -> AzureDestination:
    dtype = load_registry(hook_plugins=False).destination_type("azure")
    config = structure_destination_config(raw, dtype.config_class)
    destination = dtype.factory(config, DestinationContext(name))
    assert isinstance(destination, AzureDestination)
    return destination


def offline_config(**overrides: str) -> dict[str, str]:
    """A config for URL checks only: nothing is contacted."""
    return {
        "storage_account": "examplestorage",
        "storage_access_key": base64.b64encode(b"k" * 64).decode(),
        "container": "redis-backups",
        "path": "prod/redis",
        **overrides,
    }


@pytest.fixture
def service(azurite_server: AzuriteServer) -> BlobServiceClient:
    """An independent client, to look at what the destination stored."""
    return BlobServiceClient.from_connection_string(azurite_server.connection_string)


@pytest.fixture
def destination(raw: dict[str, str]) -> Iterator[AzureDestination]:
    with open_destination(raw) as dest:
        dest.ensure_location()
        yield dest


class FaultyProxy:
    """A reverse proxy in front of Azurite that throttles or corrupts on cue.

    ``throttle_puts``: answer that many PUTs with 503 ServerBusy (Azure's throttling reply)
    before forwarding again. ``corrupt_puts``: flip one byte in the body of that many PUTs.
    ``corrupt_gets``: flip one byte in the response body of that many GETs.
    ``truncate_gets``: send only half the body of that many GETs, then drop the connection.
    ``gets_matching``: only GETs whose path contains it are corrupted or truncated.
    ``requests`` records (method, path) of every request received, ``ranges`` the
    ``x-ms-range`` header of each (None without one).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.throttle_puts = 0
        self.corrupt_puts = 0
        self.corrupt_gets = 0
        self.truncate_gets = 0
        self.gets_matching = ""
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[str | None] = []
        self.on_request: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                    proxy.ranges.append(self.headers.get("x-ms-range"))
                    hook = proxy.on_request
                    throttle = self.command == "PUT" and proxy.throttle_puts > 0
                    corrupt = not throttle and self.command == "PUT" and proxy.corrupt_puts > 0
                    if throttle:
                        proxy.throttle_puts -= 1
                    if corrupt and body:
                        proxy.corrupt_puts -= 1
                if hook is not None:
                    hook(self.command, self.path)
                if throttle:
                    self.send_response(503, "Server Busy")
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if corrupt and body:
                    body = _flip_middle_byte(body)
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    cut = False
                    if self.command == "GET" and payload and proxy.gets_matching in self.path:
                        with proxy._lock:
                            spoil = proxy.corrupt_gets > 0
                            proxy.corrupt_gets -= spoil
                            cut = proxy.truncate_gets > 0
                            proxy.truncate_gets -= cut
                        if spoil:
                            payload = _flip_middle_byte(payload)
                    self.send_response(response.status, response.reason)
                    skip = {"connection", "transfer-encoding", "content-length"}
                    for name, value in response.getheaders():
                        if name.lower() not in skip:
                            self.send_header(name, value)
                    declared = response.getheader("Content-Length") or "0"
                    self.send_header(
                        "Content-Length",
                        declared if self.command == "HEAD" else str(len(payload)),
                    )
                    self.end_headers()
                    if cut:
                        self.wfile.write(payload[: len(payload) // 2])
                        self.close_connection = True
                    elif self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str, fragment: str) -> int:
        with self._lock:
            return sum(1 for m, path in self.requests if m == method and fragment in path)

    def ranges_asked(self, fragment: str) -> list[str | None]:
        """The ``x-ms-range`` of every GET whose path contains ``fragment``, in order."""
        with self._lock:
            return [
                asked
                for (method, path), asked in zip(self.requests, self.ranges, strict=True)
                if method == "GET" and fragment in path
            ]


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.fixture
def proxy(azurite_server: AzuriteServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(azurite_server.port) as faulty:
        yield faulty


# ------------------------------------------------------------------------ endpoint forms
@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("", "https://examplestorage.blob.core.windows.net"),
        ("core.windows.net", "https://examplestorage.blob.core.windows.net"),
        ("core.chinacloudapi.cn", "https://examplestorage.blob.core.chinacloudapi.cn"),
        ("core.usgovcloudapi.net", "https://examplestorage.blob.core.usgovcloudapi.net"),
        (".core.chinacloudapi.cn", "https://examplestorage.blob.core.chinacloudapi.cn"),
        ("blob.core.chinacloudapi.cn", "https://examplestorage.blob.core.chinacloudapi.cn"),
        (
            "https://examplestorage.privatelink.blob.core.windows.net/",
            "https://examplestorage.privatelink.blob.core.windows.net",
        ),
        ("http://127.0.0.1:10000/devstoreaccount1", "http://127.0.0.1:10000/devstoreaccount1"),
    ],
)
def test_endpoint_resolves_to_account_url_without_network(endpoint: str, expected: str) -> None:
    # Constructing the destination makes no request: these hosts need not exist.
    with open_destination(offline_config(endpoint=endpoint)) as dest:
        assert dest.account_url == expected
        assert dest.container_url == f"{expected}/redis-backups"
        assert dest.describe("2026/11/26") == "redis-backups/prod/redis/2026/11/26"


def test_endpoint_as_full_url_reaches_azurite(raw: dict[str, str], service: BlobServiceClient):
    with open_destination({**raw, "endpoint": raw["endpoint"] + "/"}) as dest:
        dest.ensure_location()
        dest.write("2026/01/02/dump.rdb", Source.from_bytes(b"payload"))
    blob = service.get_blob_client(raw["container"], "service/redis/2026/01/02/dump.rdb")
    assert blob.download_blob().readall() == b"payload"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("container", "Redis_Backups", "is not a valid container name"),
        ("container", "ab", "is not a valid container name"),
        ("storage_account", "Example-Storage", "is not a storage account name"),
        ("endpoint", "ftp://files.example.com", "not an http(s) URL"),
        ("endpoint", "https://acct.blob.core.windows.net/?sv=2024&sig=abc", "query"),
        ("endpoint", "not a host", "neither a DNS suffix"),
    ],
)
def test_invalid_values_are_refused_before_any_run(field: str, value: str, expected: str):
    raw = offline_config(**{field: value})
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "destinations": [{"type": "azure", "config": raw}],
                "source_folder": "/tmp",
                "cron_schedule": "@daily",
            },
            load_registry(hook_plugins=False),
        )
    message = str(info.value)
    assert "destinations[0].config" in message and field in message
    assert expected in message


def test_malformed_key_is_refused_without_quoting_it() -> None:
    secret = "this is not base64 but it is secret!"
    with pytest.raises(ConfigError) as info:
        structure_destination_config(
            offline_config(storage_access_key=secret), open_destination_type().config_class
        )
    assert "storage_access_key" in str(info.value)
    assert secret not in str(info.value)
    assert "base64" in str(info.value)


def open_destination_type():  # type: ignore[no-untyped-def]
    return load_registry(hook_plugins=False).destination_type("azure")


def test_registered_label_and_defaults() -> None:
    dtype = open_destination_type()
    assert (dtype.name, dtype.label) == ("azure", "Azure")
    with open_destination(offline_config()) as dest:
        assert dest.list_page_size == LIST_PAGE_SIZE == 5000
        assert dest.file_concurrency == 8


# ----------------------------------------------------------------- containers and keys
def test_existing_container_is_used_as_is(raw: dict[str, str], service: BlobServiceClient):
    container = service.create_container(raw["container"])
    container.upload_blob("elsewhere/keep.txt", b"keep me")
    with open_destination(raw) as dest:
        dest.ensure_location()
        info = dest.write("2026/11/26/dump.rdb", Source.from_bytes(b"new"))
    assert info.size == 3
    names = sorted(b.name for b in container.list_blobs())
    assert names == ["elsewhere/keep.txt", "service/redis/2026/11/26/dump.rdb"]
    assert container.download_blob("elsewhere/keep.txt").readall() == b"keep me"


def test_missing_container_is_created(raw: dict[str, str], service: BlobServiceClient) -> None:
    container = service.get_container_client(raw["container"])
    assert not container.exists()
    with open_destination(raw) as dest:
        dest.ensure_location()
    assert container.exists()


def test_wrong_key_fails_clearly_without_the_key(raw: dict[str, str]) -> None:
    with open_destination({**raw, "storage_access_key": WRONG_KEY}) as dest:
        with pytest.raises(DestinationError) as info:
            dest.ensure_location()
        message = str(info.value)
        assert "access denied" in message
        assert "devstoreaccount1" in message and "storage_access_key" in message
        assert "403" in message
        assert "\n" not in message
        assert WRONG_KEY not in message and raw["storage_access_key"] not in message
        # Not mistaken for a missing container, and nothing got created with the bad key.
        assert "does not exist" not in message
        with pytest.raises(DestinationError, match="access denied"):
            dest.write("2026/x.txt", Source.from_bytes(b"x"))


def test_missing_container_told_apart_from_denied(raw: dict[str, str]) -> None:
    with open_destination(raw) as dest:  # ensure_location never called: no container
        with pytest.raises(DestinationError) as info:
            dest.write("2026/x.txt", Source.from_bytes(b"x"))
        assert f"container {raw['container']} does not exist" in str(info.value)
        assert list(dest.list("")) == []


def test_unreachable_endpoint_fails_fast_naming_it(raw: dict[str, str]) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    started = time.monotonic()
    with (
        open_destination({**raw, "endpoint": endpoint}) as dest,
        pytest.raises(DestinationError) as info,
    ):
        dest.ensure_location()
    assert time.monotonic() - started < 30  # the SDK's defaults take about a minute
    assert endpoint in str(info.value)
    assert "Connection refused" in str(info.value)


# ------------------------------------------------------------------- layout and transfer
def test_blob_names_are_path_slash_key(destination: AzureDestination, raw, service) -> None:
    destination.write("deploy-1/2026/11/26/sub dir/dump.rdb", Source.from_bytes(b"abc"))
    names = [b.name for b in service.get_container_client(raw["container"]).list_blobs()]
    assert names == ["service/redis/deploy-1/2026/11/26/sub dir/dump.rdb"]
    assert [o.key for o in destination.list("deploy-1/")] == [
        "deploy-1/2026/11/26/sub dir/dump.rdb"
    ]


def test_path_slashes_are_normalised(raw: dict[str, str], service: BlobServiceClient) -> None:
    with open_destination({**raw, "path": "/service/redis/"}) as dest:
        assert dest.describe("2026/11/26") == f"{raw['container']}/service/redis/2026/11/26"
        dest.ensure_location()
        dest.write("a.txt", Source.from_bytes(b"a"))
        assert [o.key for o in dest.list("")] == ["a.txt"]
    names = [b.name for b in service.get_container_client(raw["container"]).list_blobs()]
    assert names == ["service/redis/a.txt"]


def test_large_upload_is_committed_from_blocks(
    destination: AzureDestination, raw: dict[str, str], service: BlobServiceClient
) -> None:
    size = MAX_SINGLE_PUT_SIZE + 2 * MAX_BLOCK_SIZE + 123
    data = os.urandom(size)
    info = destination.write("big.bin", Source.from_bytes(data))
    assert info.size == size
    blob = service.get_blob_client(raw["container"], "service/redis/big.bin")
    committed, _ = blob.get_block_list("committed")
    assert len(committed) > 1, "a file above the single-put limit goes up in blocks"
    assert max(b.size for b in committed) <= MAX_BLOCK_SIZE
    with destination.open_read("big.bin") as stream:
        pieces = []
        while piece := stream.read(1_000_003):
            pieces.append(piece)
    assert b"".join(pieces) == data


GOOD = b"the good backup of this morning\n" * 1000
SOURCE_SIZES = {
    "single put": 10_000,
    "blocks": MAX_SINGLE_PUT_SIZE + 2 * MAX_BLOCK_SIZE + 5,
}


def failing_source(tmp_path: Path, kind: str, size: int) -> Source:
    """A file listed at ``size`` that is then short, longer, or rewritten in place."""
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(os.urandom(size))
    listed = os.stat(path)
    if kind == "short":
        os.truncate(path, size - 7)
    elif kind == "grown":
        with open(path, "ab") as f:
            f.write(b"appended after the listing")
    elif kind == "modified":
        os.utime(path, ns=(listed.st_atime_ns, listed.st_mtime_ns + 1_000_000_000))
    return Source(str(path), size, path=path, mtime_ns=listed.st_mtime_ns)


@pytest.mark.parametrize("kind", ["short", "grown", "modified"])
@pytest.mark.parametrize("how", list(SOURCE_SIZES))
def test_failing_source_never_replaces_a_good_blob(
    destination: AzureDestination, tmp_path: Path, kind: str, how: str, raw, service
) -> None:
    key = f"2026/11/26/{how}-{kind}.rdb"
    destination.write(key, Source.from_bytes(GOOD))
    source = failing_source(tmp_path, kind, SOURCE_SIZES[how])
    try:
        with pytest.raises(SourceError) as info:
            destination.write(key, source)
    finally:
        source.close()
    assert f"{kind}.bin" in str(info.value), f"the error must name the source file: {info.value}"
    with destination.open_read(key) as stream:
        assert stream.read() == GOOD, f"a {kind} source replaced the good blob ({how})"
    blob = service.get_blob_client(raw["container"], f"service/redis/{key}")
    committed, _ = blob.get_block_list("all")
    assert committed == [], "the good blob (one Put Blob) must still be the committed one"


def test_source_growing_during_a_block_upload_never_replaces_a_good_blob(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    size = MAX_SINGLE_PUT_SIZE + 5 * MAX_BLOCK_SIZE  # six blocks: the last read comes later
    path = tmp_path / "growing.bin"
    path.write_bytes(os.urandom(size))
    grown = threading.Event()

    def grow(method: str, target: str) -> None:
        # The first block reaches the server while the last one is still unread.
        if method == "PUT" and "comp=block" in target and not grown.is_set():
            with open(path, "ab") as f:
                f.write(b"x" * 100)
            grown.set()

    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("dump.rdb", Source.from_bytes(GOOD))
        proxy.on_request = grow
        source = Source(str(path), size, path=path)
        try:
            with pytest.raises(SourceError, match=r"growing\.bin"):
                dest.write("dump.rdb", source)
        finally:
            source.close()
        assert grown.is_set(), "the test did not grow the file during the upload"
        with dest.open_read("dump.rdb") as stream:
            assert stream.read() == GOOD, "a source that grew mid-upload replaced the good blob"
        assert proxy.count("PUT", "comp=blocklist") == 0, "blocks were committed"


def test_failing_source_leaves_no_blob_where_there_was_none(
    destination: AzureDestination, tmp_path: Path
) -> None:
    for how, size in SOURCE_SIZES.items():
        source = failing_source(tmp_path, "short", size)
        try:
            with pytest.raises(SourceError):
                destination.write(f"new-{how}.bin", source)
        finally:
            source.close()
        with pytest.raises(ObjectNotFound):
            destination.stat(f"new-{how}.bin")


def test_huge_files_get_bigger_blocks_within_the_block_limit() -> None:
    assert block_size_for(1) == MAX_BLOCK_SIZE
    assert block_size_for(MAX_BLOCKS * MAX_BLOCK_SIZE) == MAX_BLOCK_SIZE
    for size in (MAX_BLOCKS * MAX_BLOCK_SIZE + 1, 1024 * 1024 * MiB):
        block = block_size_for(size)
        assert block % MiB == 0 and -(-size // block) <= MAX_BLOCKS, size


def test_corrupted_upload_is_refused_by_the_service(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    with open_destination(raw) as dest:
        dest.ensure_location()
        for name, size in (("small.bin", 64 * 1024), ("blocks.bin", MAX_SINGLE_PUT_SIZE + 1)):
            proxy.corrupt_puts = 1
            with pytest.raises(DestinationError) as info:
                dest.write(name, Source.from_bytes(os.urandom(size)))
            assert f"uploading {raw['container']}/service/redis/{name}" in str(info.value)
            assert "HTTP 400" in str(info.value)
            with pytest.raises(ObjectNotFound):
                dest.stat(name)


def test_corrupted_download_is_detected_and_fetched_again(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    data = os.urandom(64 * 1024)
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("read-back.bin", Source.from_bytes(data))
        proxy.corrupt_gets = 1
        with dest.open_read("read-back.bin") as stream:
            assert stream.read() == data
        # The bytes did not match the blob's stored MD5 (a Put Blob stores one): refused
        # before any was handed out, and the blob asked for again, whole.
        assert proxy.count("GET", "read-back.bin") == 2
        assert proxy.ranges_asked("read-back.bin") == [None, None]


def test_a_small_blob_is_one_plain_get(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("small.bin", Source.from_bytes(b"s" * 16384))
        with dest.open_read("small.bin") as stream:
            assert stream.read() == b"s" * 16384
    # No range and no range MD5 for the service to compute: the stored MD5 answers.
    assert proxy.ranges_asked("small.bin") == [None], "a small blob must be one whole GET"


def test_a_streamed_blob_is_one_get(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    data = os.urandom(3 * READ_WHOLE_MAX + 777)
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("big.bin", Source.from_bytes(data))
        with dest.open_read("big.bin") as stream:
            pieces = []
            while piece := stream.read(1_000_003):
                pieces.append(piece)
    assert b"".join(pieces) == data, "the streamed read returned other bytes than were stored"
    assert proxy.ranges_asked("big.bin") == [None], "a big blob must stream in one GET"


def test_closing_a_half_read_stream_ends_its_prefetching(destination: AzureDestination) -> None:
    data = os.urandom(6 * READ_WHOLE_MAX)
    destination.write("half.bin", Source.from_bytes(data))
    before = {t for t in threading.enumerate() if t.name == "azure-read"}
    stream = destination.open_read("half.bin")
    assert stream.read(1000) == data[:1000]
    (helper,) = {t for t in threading.enumerate() if t.name == "azure-read"} - before
    stream.close()
    helper.join(10)  # it ends after the piece it is reading, not at the end of the blob
    assert not helper.is_alive(), "the prefetching thread outlived its closed stream"


def test_a_spoiled_stream_with_a_stored_md5_fails_its_last_read(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer, service
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    data = os.urandom(READ_WHOLE_MAX + 4321)
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("tool.bin", Source.from_bytes(data))
        _set_stored_md5(service, raw, "tool.bin", hashlib.md5(data).digest())  # as tools do
        proxy.corrupt_gets = 1
        got = bytearray()
        with pytest.raises(DestinationError) as failure, dest.open_read("tool.bin") as stream:
            while piece := stream.read(1 << 20):
                got += piece
    message = str(failure.value)
    assert "checksum mismatch" in message, f"a spoiled stream was not caught: {message}"
    assert f"{raw['container']}/service/redis/tool.bin" in message, f"blob not named: {message}"
    assert len(got) < len(data), "the reader was handed every byte before the failure"


def test_a_missing_blob_is_named_by_open_read(destination: AzureDestination, raw) -> None:
    with pytest.raises(ObjectNotFound) as failure:
        destination.open_read("2026/12/01/nothing here.bin")
    message = str(failure.value)
    assert "2026/12/01/nothing here.bin" in message, f"the key is not named: {message}"
    assert raw["container"] in message, f"the container is not named: {message}"


def _set_stored_md5(service: BlobServiceClient, raw: dict[str, str], name: str, md5: bytes) -> None:
    blob = service.get_blob_client(raw["container"], f"service/redis/{name}")
    blob.set_http_headers(ContentSettings(content_md5=bytearray(md5)))


@pytest.mark.parametrize("size", [64 * 1024, READ_WHOLE_MAX + 12345], ids=["whole", "streamed"])
def test_bytes_that_do_not_match_the_stored_content_md5_fail_the_read(
    destination: AzureDestination, raw, service, size: int
) -> None:
    data = os.urandom(size)
    destination.write("rot.bin", Source.from_bytes(data))
    _set_stored_md5(service, raw, "rot.bin", hashlib.md5(data).digest())
    with destination.open_read("rot.bin") as stream:
        assert stream.read() == data, "a blob whose stored Content-MD5 matches did not read back"
    _set_stored_md5(service, raw, "rot.bin", hashlib.md5(data + b"x").digest())
    with pytest.raises(DestinationError) as failure, destination.open_read("rot.bin") as stream:
        stream.read()
    message = str(failure.value)
    assert "checksum mismatch" in message, f"a stored MD5 mismatch was not caught: {message}"
    assert f"{raw['container']}/service/redis/rot.bin" in message, f"blob not named: {message}"


def test_a_blob_replaced_while_read_is_never_mixed_in(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer, service
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    old = os.urandom(READ_WHOLE_MAX + 1000)
    replaced = threading.Event()

    def replace_before_the_resume(method: str, target: str) -> None:
        if method == "GET" and "moving.bin" in target and proxy.count("GET", "moving.bin") == 2:
            blob = service.get_blob_client(raw["container"], "service/redis/moving.bin")
            blob.upload_blob(os.urandom(len(old)), overwrite=True)
            replaced.set()

    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("moving.bin", Source.from_bytes(old))
        proxy.truncate_gets = 1  # the GET breaks off half-way; the rest is asked for by range
        proxy.on_request = replace_before_the_resume
        replaced_error = pytest.raises(DestinationError, match="replaced while it was read")
        with replaced_error as failure, dest.open_read("moving.bin") as stream:
            stream.read()
    assert replaced.is_set(), "the test did not replace the blob before the resume"
    assert "moving.bin" in str(failure.value)


def test_a_stream_cut_mid_way_is_resumed_where_it_broke(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    data = os.urandom(READ_WHOLE_MAX + 5000)
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("cut.bin", Source.from_bytes(data))
        proxy.truncate_gets = 1  # the proxy sends half of the body, then drops the connection
        with dest.open_read("cut.bin") as stream:
            got = stream.read()
    assert got == data, "the read returned other bytes than were stored"
    assert proxy.ranges_asked("cut.bin") == [None, f"bytes={len(data) // 2}-"], (
        "one GET, then only the bytes after the cut asked for"
    )


def test_a_small_blob_cut_mid_way_is_asked_for_again(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    data = os.urandom(200_000)
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("cut-small.bin", Source.from_bytes(data))
        proxy.truncate_gets = 1
        with dest.open_read("cut-small.bin") as stream:
            assert stream.read() == data, "the read returned other bytes than were stored"
    assert proxy.ranges_asked("cut-small.bin") == [None, None], "asked for again, whole"


def test_a_spoiled_block_list_blob_is_never_restored(
    tmp_path: Path, raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    """A blob without a stored MD5 (this plugin's block-list uploads) spoiled on the way:
    no range MD5 catches it any more; ``restore``'s sha256 against the manifest does."""
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    source = tmp_path / "source"
    source.mkdir()
    files = {"big.rdb": os.urandom(MAX_SINGLE_PUT_SIZE + 3000), "small.aof": b"aof" * 100}
    for name, data in files.items():
        (source / name).write_bytes(data)
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "azure", "name": "dr-azure", "config": raw}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
        },
    )
    backup = run_cli("backup", str(config))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    proxy.gets_matching = "big.rdb"
    proxy.corrupt_gets = 1
    target = tmp_path / "restored"
    restore = run_cli("restore", str(config), "--to", str(target))
    assert proxy.corrupt_gets == 0, "the proxy never spoiled the blob's GET"
    assert restore.returncode == 1, restore.stdout + restore.stderr
    assert "big.rdb" in restore.stdout and "sha256 mismatch" in restore.stdout, restore.stdout
    restored = {p.name: p.read_bytes() for p in target.iterdir()}
    assert restored == {"small.aof": files["small.aof"]}, "a spoiled file was put in place"


def test_an_empty_blob_reads_back_empty(destination: AzureDestination) -> None:
    destination.write("empty", Source.from_bytes(b""))
    with destination.open_read("empty") as stream:
        assert stream.read() == b""


def test_throttling_is_retried(
    raw: dict[str, str], proxy: FaultyProxy, azurite_server: AzuriteServer
) -> None:
    raw = {**raw, "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}"}
    with open_destination(raw) as dest:
        dest.ensure_location()
        proxy.throttle_puts = 1
        info = dest.write("throttled.txt", Source.from_bytes(b"eventually"))
        assert info.size == 10
        assert proxy.count("PUT", "throttled.txt") == 2  # one 503, one retry that went through
        with dest.open_read("throttled.txt") as stream:
            assert stream.read() == b"eventually"


def test_retry_budget_is_bounded() -> None:
    with open_destination(offline_config()) as dest:
        policy = dest.retry_policy
    assert policy.total_retries == RETRY_TOTAL <= 5
    assert policy.connect_retries <= 2
    # The policy sleeps initial + base**n (+- jitter) before retry n.
    waits = [
        policy.initial_backoff + policy.increment_base**n + policy.random_jitter_range
        for n in range(1, policy.total_retries + 1)
    ]
    assert sum(waits) < 45, f"worst-case back-off {sum(waits):.0f} s"
    assert sum(waits[: policy.connect_retries]) <= 10, "a dead endpoint must fail in seconds"


def test_sdk_logging_stays_out_of_the_process_log(
    destination: AzureDestination, caplog: pytest.LogCaptureFixture, raw: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG)  # as if something configured the root logger verbosely
    destination.write("logged.txt", Source.from_bytes(b"x"))
    destination.stat("logged.txt")
    azure_records = [r for r in caplog.records if r.name.startswith("azure")]
    assert azure_records == []
    assert raw["storage_access_key"] not in caplog.text
    assert "Authorization" not in caplog.text


def test_sas_url_from_the_server_handle_works(
    azurite_server: AzuriteServer, destination: AzureDestination, raw: dict[str, str]
) -> None:
    # The benchmark points rclone at Azurite through this URL.
    destination.write("sas/visible.txt", Source.from_bytes(b"sas"))
    client = ContainerClient.from_container_url(azurite_server.container_sas_url(raw["container"]))
    assert [b.name for b in client.list_blobs()] == ["service/redis/sas/visible.txt"]


# ------------------------------------------------------------------------------- the CLI
def test_cli_backup_end_to_end(
    tmp_path: Path, raw: dict[str, str], service: BlobServiceClient
) -> None:
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "dump.rdb").write_bytes(os.urandom(MAX_SINGLE_PUT_SIZE + 1000))
    (source / "nested" / "appendonly.aof").write_bytes(b"aof data")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "azure", "name": "dr-azure", "config": raw}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
            "deployment_name": "service-instance_6f1c2a",
            "add_deployment_name_to_backup_path": True,
            "azure_cli_path": "/var/vcap/packages/service-backup_blobxfer/bin/blobxfer",
        },
    )
    result = run_cli("backup", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = f"service-instance_6f1c2a/{TODAY}"
    about = result.find(
        f"about to upload {source} to Azure remote path {raw['container']}/service/redis/{prefix}"
    )
    assert len(about) == 1 and about[0]["data"]["destination_name"] == "dr-azure"
    done = result.find("Upload backup completed successfully")
    assert len(done) == 1
    assert done[0]["data"]["size_in_bytes"] == MAX_SINGLE_PUT_SIZE + 1000 + 8
    container = service.get_container_client(raw["container"])
    stored = {b.name: b.size for b in container.list_blobs()}
    manifest = f"service/redis/{prefix}/.service-backup-manifest.json"
    assert stored.pop(manifest, 0) > 0, "no run manifest"
    assert stored == {
        f"service/redis/{prefix}/dump.rdb": MAX_SINGLE_PUT_SIZE + 1000,
        f"service/redis/{prefix}/nested/appendonly.aof": 8,
    }
    blob = f"service/redis/{prefix}/dump.rdb"
    assert container.download_blob(blob).readall() == (source / "dump.rdb").read_bytes()
    assert raw["storage_access_key"] not in result.stdout + result.stderr


def test_cli_backup_with_wrong_key_fails_without_leaking_it(
    tmp_path: Path, raw: dict[str, str]
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "dump.rdb").write_bytes(b"data")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "azure", "config": {**raw, "storage_access_key": WRONG_KEY}}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
        },
    )
    result = run_cli("backup", str(config))
    assert result.returncode == 1
    failed = result.find("Upload backup completed with error")
    assert len(failed) == 1
    error = failed[0]["data"]["error"]
    assert "access denied by storage account devstoreaccount1" in error
    assert WRONG_KEY not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_listing_follows_pages_and_keeps_awkward_names(destination: AzureDestination) -> None:
    keys = ["a b.txt", "ü/ñ.rdb", "x#y?z%20.bin", ".hidden", "deep/er/empty"]
    for index, key in enumerate(keys):
        destination.write(f"2026/12/01/{key}", Source.from_bytes(b"k" * index))
    destination.write("2026/12/02/other", Source.from_bytes(b"other"))
    destination.list_page_size = 2  # three pages for five blobs
    listed = {o.key: o.size for o in destination.list("2026/12/01/")}
    assert listed == {f"2026/12/01/{key}": index for index, key in enumerate(keys)}, listed
    assert all(o.modified is not None for o in destination.list("2026/12/02/"))


def test_listing_decodes_names_the_service_had_to_encode() -> None:
    page = parse_page(
        b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>'
        b"<Blob><Name>plain/a b</Name><Properties><Content-Length>3</Content-Length>"
        b"<Last-Modified>Tue, 01 Dec 2026 15:32:49 GMT</Last-Modified></Properties></Blob>"
        b'<Blob><Name Encoded="true">odd/%EF%BF%BE%01.bin</Name><Properties>'
        b"<Content-Length>0</Content-Length></Properties></Blob>"
        b"</Blobs><NextMarker>m2</NextMarker></EnumerationResults>"
    )
    assert [(b.name, b.size) for b in page.blobs] == [
        ("plain/a b", 3),
        ("odd/\ufffe\x01.bin", 0),
    ]
    assert page.blobs[0].modified is not None and page.blobs[0].modified.year == 2026
    assert page.next_marker == "m2"
