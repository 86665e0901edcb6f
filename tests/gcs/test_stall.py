"""Hangs: a black-holed or trickling GCS endpoint, and shutdown, end a transfer in bounded time.

``tests/faultproxy.py`` sits in front of the real emulator. The stall rule is configured short
here (2 s); the defaults (60 s, 1 KiB/s) are checked as config values. Every failure must
name the destination and say "stalled" (or "shutting down"), never a socket error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import DestinationError
from service_backup.plugins import load_registry
from service_backup.source import Source
from service_backup_gcs.destination import SINGLE_REQUEST_LIMIT, GCSDestination
from tests.core.cli import run_cli
from tests.faultproxy import FaultProxy, fault_proxy, shutdown_outcome
from tests.gcs.server import GCSServer
from tests.gcs.test_gcs import Seen, cli_config, config_error
from tests.gcs.test_gcs import fake_gcs as fake_gcs  # a fixture

MiB = 1024 * 1024
STALL = 2.0
#: The guard measures fixed windows of the stall period: a fault that begins mid-window trips
#: at the end of the next one (up to 2 periods, plus its 1 s tick); a failed streamed upload
#: then cancels its session under a stall rule of its own (up to 1 period more), plus slack.
WITHIN = 2 * STALL + 1.0 + STALL + 2.0
NAME = "gcs-stall"


def open_destination(raw: dict[str, Any], stop: threading.Event | None = None) -> GCSDestination:
    dtype = load_registry(hook_plugins=False).destination_type("gcs")
    config = structure_destination_config(raw, dtype.config_class)
    context = DestinationContext(NAME, stop or threading.Event())
    destination = dtype.factory(config, context)
    assert isinstance(destination, GCSDestination)
    return destination


@pytest.fixture
def proxy(gcs_server: GCSServer) -> Iterator[FaultProxy]:
    with fault_proxy(gcs_server.port, interval=0.5) as running:
        yield running


@pytest.fixture
def proxied(gcs_server: GCSServer, bucket_name: str, proxy: FaultProxy) -> dict[str, Any]:
    return gcs_server.config(
        bucket_name,
        endpoint=f"http://127.0.0.1:{proxy.port}",
        stall_timeout_seconds=STALL,
        stall_min_bytes_per_second=1024,
    )


def assert_stalled(failure: pytest.ExceptionInfo[DestinationError], started: float) -> None:
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert "stalled" in message, f"the error does not say the transfer stalled: {message}"
    assert NAME in message, f"the error does not name the destination: {message}"
    assert elapsed < WITHIN, f"took {elapsed:.1f}s to give up (stall rule: {STALL}s)"


def test_stall_settings_default_and_are_checked(gcs_server: GCSServer) -> None:
    dtype = load_registry(hook_plugins=False).destination_type("gcs")
    config = structure_destination_config(gcs_server.config("b"), dtype.config_class)
    assert (config.stall_timeout_seconds, config.stall_min_bytes_per_second) == (60, 1024)
    message = config_error(gcs_server.config("b", stall_timeout_seconds=0))
    assert "stall_timeout_seconds must be a number of seconds above 0" in message
    message = config_error(gcs_server.config("b", stall_min_bytes_per_second=-1))
    assert "stall_min_bytes_per_second must be 0 or more" in message


@pytest.mark.parametrize("mode", ["blackhole", "trickle"])
def test_bucket_check_stalls(proxied: dict[str, Any], proxy: FaultProxy, mode: str) -> None:
    proxy.mode = mode
    with open_destination(proxied) as destination:
        started = time.monotonic()
        with pytest.raises(DestinationError) as failure:
            destination.ensure_location()
    assert_stalled(failure, started)


class FaultAt(Source):
    """An in-memory source that switches the proxy to ``mode`` once ``offset`` was read:
    the fault hits the upload's own request, not the calls before it."""

    def __init__(self, data: bytes, proxy: FaultProxy, mode: str, offset: int) -> None:
        super().__init__("fault-at", len(data), data=data)
        self.proxy, self.mode, self.offset = proxy, mode, offset

    def read_at(self, offset: int, length: int) -> bytes:
        if offset + length >= self.offset:
            self.proxy.mode = self.mode
        return super().read_at(offset, length)


@pytest.mark.parametrize("size", [1000, SINGLE_REQUEST_LIMIT + 4 * MiB])
@pytest.mark.parametrize("mode", ["blackhole", "trickle"])
def test_upload_stalls(proxied: dict[str, Any], proxy: FaultProxy, mode: str, size: int) -> None:
    with open_destination(proxied) as destination:
        destination.ensure_location()
        source = FaultAt(b"s" * size, proxy, mode, offset=size // 2)
        started = time.monotonic()
        with pytest.raises(DestinationError) as failure:
            destination.write("stalled.bin", source)
    assert proxy.mode == mode, "the fault was never switched on"
    assert_stalled(failure, started)


def test_read_stalls(proxied: dict[str, Any], proxy: FaultProxy) -> None:
    # Larger than what loopback socket buffers can hold, so the black hole is felt mid-read.
    data = b"r" * (32 * MiB)
    with open_destination(proxied) as destination:
        destination.ensure_location()
        destination.write("read.bin", Source.from_bytes(data))
        with destination.open_read("read.bin") as stream:
            assert stream.read(1000) == data[:1000]
            proxy.mode = "blackhole"  # the open connection's answer stops flowing too
            started = time.monotonic()
            with pytest.raises(DestinationError) as failure:
                stream.read()
    assert_stalled(failure, started)


def test_shutdown_aborts_an_upload_in_flight(proxied: dict[str, Any], proxy: FaultProxy) -> None:
    stop = threading.Event()
    raw = {**proxied, "stall_timeout_seconds": 600}  # only shutdown can end it in time
    with open_destination(raw, stop) as destination:
        destination.ensure_location()
        proxy.mode = "blackhole"
        failure, elapsed = shutdown_outcome(
            proxy,
            stop,
            lambda: destination.write("late.bin", Source.from_bytes(b"l" * (8 * MiB))),
            "upload",
        )
    message = str(failure)
    assert isinstance(failure, DestinationError), message
    assert "shutting down" in message and NAME in message, message
    assert elapsed < 3.0, f"shutdown took {elapsed:.1f}s to abort the upload"


def test_a_failed_streamed_upload_cancels_its_session(
    gcs_server: GCSServer, fake_gcs: Any, bucket_name: str
) -> None:
    """A failure that is not retried (here a 403 on the stream) cancels the session."""
    session_url = ""

    def respond(seen: Seen) -> tuple[int, Any] | tuple[int, Any, dict[str, str]]:
        if seen.method == "POST":
            return 200, {}, {"Location": session_url}
        if seen.method == "DELETE":
            return 499, None
        return 403, {"error": {"code": 403, "message": "no"}}

    fake = fake_gcs(respond)
    session_url = f"{fake.url}/upload/storage/v1/b/{bucket_name}/o?upload_id=s9"
    raw = gcs_server.config(bucket_name, endpoint=fake.url)
    with open_destination(raw) as destination, pytest.raises(DestinationError, match="access"):
        destination.write("x.bin", Source.from_bytes(b"x" * (SINGLE_REQUEST_LIMIT + 1)))
    deletes = fake.requests_to("DELETE", f"/upload/storage/v1/b/{bucket_name}/o")
    assert [d.query.get("upload_id") for d in deletes] == [["s9"]], "the session was not cancelled"


def test_a_backup_run_against_a_black_hole_fails_naming_the_destination(
    proxied: dict[str, Any], proxy: FaultProxy, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "dump.rdb").write_bytes(b"rdb")
    proxy.mode = "blackhole"
    started = time.monotonic()
    result = run_cli("backup", str(cli_config(tmp_path, source, proxied)))
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    (failed,) = result.find("Upload backup completed with error")
    error = failed["data"]["error"]
    assert "stalled" in error and "at destination google" in error, error
    assert "Traceback" not in result.stdout + result.stderr
    assert elapsed < WITHIN + 5, f"the run took {elapsed:.0f}s against a black hole"
