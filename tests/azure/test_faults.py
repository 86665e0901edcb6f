"""Hangs and broken connections: the TCP fault proxy (``tests/faultproxy.py``) in front of Azurite.

A black-holed or trickling endpoint must fail a write within the configured stall time (short
here) with an error naming the destination and saying it stalled; shutdown must cut a write
short; a connection reset mid-upload must fail the write cleanly and leave no blob.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service_backup.config import parse_config, structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError, ObjectNotFound
from service_backup.plugins import load_registry
from service_backup.source import Source
from service_backup_azure.destination import MAX_BLOCK_SIZE, MAX_SINGLE_PUT_SIZE, AzureDestination
from tests.azure.server import AzuriteServer
from tests.faultproxy import FaultProxy, fault_proxy

STALL = 2  # seconds of the stall rule in these tests
#: The guard looks once a second and judges whole periods: a stall shows within two periods.
STALL_BOUND = 2 * STALL + 3
NAME = "dr-azure"
SIZES = {"single put": 64 * 1024, "blocks": MAX_SINGLE_PUT_SIZE + 2 * MAX_BLOCK_SIZE}


def open_destination(raw: dict[str, Any], stop: threading.Event | None = None) -> AzureDestination:
    dtype = load_registry(hook_plugins=False).destination_type("azure")
    config = structure_destination_config(raw, dtype.config_class)
    context = DestinationContext(NAME, stop=stop or threading.Event())
    destination = dtype.factory(config, context)
    assert isinstance(destination, AzureDestination)
    return destination


@pytest.fixture
def proxy(azurite_server: AzuriteServer) -> Iterator[FaultProxy]:
    with fault_proxy(azurite_server.port) as faulty:
        yield faulty


@pytest.fixture
def raw(azurite_server: AzuriteServer, proxy: FaultProxy) -> dict[str, Any]:
    return {
        "storage_account": azurite_server.account_name,
        "storage_access_key": azurite_server.account_key,
        "container": f"f-{uuid.uuid4().hex[:16]}",
        "path": "faults",
        "endpoint": f"http://127.0.0.1:{proxy.port}/{azurite_server.account_name}",
        "stall_timeout_seconds": STALL,
        "stall_min_bytes_per_second": 1024,
    }


def failing_write(dest: AzureDestination, key: str, size: int) -> tuple[DestinationError, float]:
    started = time.monotonic()
    with pytest.raises(DestinationError) as info:
        dest.write(key, Source.from_bytes(os.urandom(size)))
    return info.value, time.monotonic() - started


@pytest.mark.parametrize("mode", ["blackhole", "trickle"])
@pytest.mark.parametrize("how", list(SIZES))
def test_stalled_endpoint_fails_within_the_stall_time(
    raw: dict[str, Any], proxy: FaultProxy, mode: str, how: str
) -> None:
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("good.rdb", Source.from_bytes(b"good"))
        proxy.mode, proxy.interval = mode, 1.0
        error, elapsed = failing_write(dest, "good.rdb", SIZES[how])
        message = str(error)
        assert NAME in message and "stalled" in message, f"unclear stall error: {message}"
        assert f"uploading {raw['container']}/faults/good.rdb" in message, message
        assert "\n" not in message
        assert elapsed < STALL_BOUND, f"a {mode} endpoint held the write {elapsed:.1f}s"
        proxy.mode = "pass"
        with dest.open_read("good.rdb") as stream:
            kept = stream.read()
    if mode == "blackhole" or how == "blocks":
        # Nothing reached the server (black hole), or the blocks were never committed.
        assert kept == b"good", f"the good blob was replaced by a stalled {how} upload"


def test_shutdown_aborts_an_inflight_write_at_once(raw: dict[str, Any], proxy: FaultProxy) -> None:
    stop = threading.Event()
    raw = {**raw, "stall_timeout_seconds": 600}  # only the shutdown can end this write
    with open_destination(raw, stop) as dest:
        dest.ensure_location()
        proxy.mode = "blackhole"
        timer = threading.Timer(1.0, stop.set)
        timer.start()
        try:
            error, elapsed = failing_write(dest, "late.rdb", SIZES["blocks"])
        finally:
            timer.cancel()
    assert "shutting down" in str(error) and NAME in str(error), str(error)
    assert elapsed < 1.0 + 3, f"shutdown took {elapsed:.1f}s to end the write"


def test_reset_mid_upload_fails_cleanly_and_leaves_no_blob(
    raw: dict[str, Any], proxy: FaultProxy
) -> None:
    with open_destination(raw) as dest:
        dest.ensure_location()
        # Quick retries, so the test does not wait out the real back-off (3 + 5 + 9 s).
        dest.retry_policy.initial_backoff = 0.1
        dest.retry_policy.increment_base = 1
        dest.retry_policy.random_jitter_range = 0
        proxy.mode, proxy.after_bytes = "reset", 1024 * 1024  # every block request is cut
        error, _ = failing_write(dest, "reset.rdb", SIZES["blocks"])
        message = str(error)
        assert "stalled" not in message, f"a reset is not a stall: {message}"
        assert f"while uploading {raw['container']}/faults/reset.rdb" in message, message
        assert "Remote end closed" in message or "reset" in message, message
        assert "\n" not in message and "Traceback" not in message
        assert proxy.connections > 1, "the SDK did not retry the reset request"
        proxy.mode = "pass"
        with pytest.raises(ObjectNotFound):
            dest.stat("reset.rdb")
        assert [o.key for o in dest.list("")] == [], "a reset upload left a blob behind"


def test_stall_settings_are_validated() -> None:
    base = {
        "storage_account": "examplestorage",
        "storage_access_key": "a2V5",
        "container": "backups",
        "path": "p",
    }
    for field in ("stall_timeout_seconds", "stall_min_bytes_per_second"):
        with pytest.raises(ConfigError) as info:
            parse_config(
                {
                    "destinations": [{"type": "azure", "config": {**base, field: 0}}],
                    "source_folder": "/tmp",
                    "cron_schedule": "@daily",
                },
                load_registry(hook_plugins=False),
            )
        assert f"destinations[0].config.{field}" in str(info.value)
        assert "above 0" in str(info.value)
    dtype = load_registry(hook_plugins=False).destination_type("azure")
    config = structure_destination_config(base, dtype.config_class)
    assert (config.stall_timeout_seconds, config.stall_min_bytes_per_second) == (60, 1024)


def test_shutdown_ends_a_retry_back_off(raw: dict[str, Any], proxy: FaultProxy) -> None:
    stop = threading.Event()
    raw = {**raw, "stall_timeout_seconds": 600}
    with open_destination(raw, stop) as dest:
        dest.ensure_location()
        dest.retry_policy.initial_backoff = 60  # a back-off only the shutdown can cut short
        dest.retry_policy.random_jitter_range = 0
        proxy.mode, proxy.after_bytes = "reset", 1  # every request is reset, then retried
        timer = threading.Timer(1.0, stop.set)
        timer.start()
        try:
            error, elapsed = failing_write(dest, "backoff.rdb", SIZES["single put"])
        finally:
            timer.cancel()
    assert "shutting down" in str(error) and NAME in str(error), str(error)
    assert elapsed < 10, f"the retry back-off held the write {elapsed:.1f}s after shutdown"
