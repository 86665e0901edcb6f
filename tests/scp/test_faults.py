"""Faults at the SFTP server: stalls, resets, shutdown, leftovers, and what stored copies
may reveal. A TCP fault proxy (``tests/faultproxy.py``) sits between the plugin and the real
sshd; its mode changes while an upload runs."""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import DestinationError
from service_backup.layout import MiB
from service_backup.source import Source
from service_backup_scp.config import ScpConfig
from service_backup_scp.destination import ORPHAN_AGE, PARTIAL_MARK, SPLIT_THRESHOLD, ScpDestination
from tests.faultproxy import FaultProxy, fault_proxy

from .server import SshServer
from .test_scp import _descendants, captured_logs, config_error, partials, raw_config


def open_destination(raw: dict[str, Any], stop: threading.Event | None = None) -> ScpDestination:
    config = structure_destination_config(raw, ScpConfig)
    return ScpDestination(config, DestinationContext("scp-faults", stop or threading.Event()))


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[FaultProxy]:
    with fault_proxy(sshd.port) as running:
        yield running


def through(proxy: FaultProxy, sshd: SshServer, **overrides: Any) -> dict[str, Any]:
    """A config reaching sshd through the proxy (host keys pinned without a host name)."""
    keys_only = "\n".join(line.split(" ", 1)[1] for line in sshd.keyscan.splitlines())
    return raw_config(sshd, port=proxy.port, fingerprint=keys_only, **overrides)


def failing_write(dest: ScpDestination, key: str, size: int) -> tuple[str, float]:
    """Write ``size`` random bytes, expecting a DestinationError: its text and the seconds."""
    started = time.monotonic()
    with pytest.raises(DestinationError) as info:
        dest.write(key, Source.from_bytes(os.urandom(size)))
    return str(info.value), time.monotonic() - started


# ------------------------------------------------------------------------------------ stalls
@pytest.mark.parametrize("mode", ["blackhole", "trickle"])
def test_a_stalled_upload_is_aborted_by_the_stall_rule(
    sshd: SshServer, proxy: FaultProxy, mode: str
) -> None:
    raw = through(proxy, sshd, stall_timeout_seconds=2)
    good = b"yesterday's good copy"
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("d/dump.rdb", Source.from_bytes(good))
        proxy.mode, proxy.interval = mode, 0.05  # trickle: 20 bytes/s from the server
        message, elapsed = failing_write(dest, "d/dump.rdb", 16 * MiB)
    assert message.startswith(f"upload to 127.0.0.1:{proxy.port}: stalled: "), message
    assert "less than 1024 bytes/s for 2s" in message
    assert elapsed < 15, f"the stall took {elapsed:.0f}s to be noticed (rule: 2 s)"
    assert (Path(raw["destination"]) / "d" / "dump.rdb").read_bytes() == good


def test_a_stalled_batch_is_aborted_and_reports_the_stall(
    sshd: SshServer, proxy: FaultProxy
) -> None:
    raw = through(proxy, sshd, stall_timeout_seconds=2)
    with open_destination(raw) as dest:
        dest.ensure_location()
        proxy.mode = "blackhole"
        items = [(f"b/{i}", Source.from_bytes(os.urandom(200_000))) for i in range(5)]
        started = time.monotonic()
        with pytest.raises(DestinationError) as info:
            dest.write_batch(items)
        elapsed = time.monotonic() - started
    assert str(info.value).startswith(f"upload to 127.0.0.1:{proxy.port}: stalled: "), info.value
    assert elapsed < 15
    assert not (Path(raw["destination"]) / "b").exists() or not list(
        (Path(raw["destination"]) / "b").iterdir()
    )


def test_every_write_sharing_a_stalled_connection_reports_the_stall(
    sshd: SshServer, proxy: FaultProxy
) -> None:
    """The first guard to trip closes the connection; the others say why, not 'dropped'."""
    raw = through(proxy, sshd, stall_timeout_seconds=2)
    with open_destination(raw) as dest:
        dest.ensure_location()
        proxy.mode = "blackhole"
        errors: list[str] = []

        def one(n: int) -> None:
            try:
                dest.write(f"w/{n}", Source.from_bytes(os.urandom(4 * MiB)))
            except DestinationError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=one, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(errors) == 3, errors
    assert all("stalled: less than 1024 bytes/s" in e for e in errors), errors


def test_split_upload_stall_closes_both_connections(
    sshd: SshServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    with open(path, "wb") as out:
        out.truncate(SPLIT_THRESHOLD + 1)
    raw = through(proxy, sshd, stall_timeout_seconds=2)
    with open_destination(raw) as dest:
        dest.ensure_location()
        proxy.mode = "blackhole"
        source = Source(str(path), SPLIT_THRESHOLD + 1, path=path)
        started = time.monotonic()
        with pytest.raises(DestinationError, match="stalled"):
            dest.write("big.bin", source)
        source.close()
        assert time.monotonic() - started < 15
        assert all(not c.transport.is_active() for c in dest.pool._connections)


def test_shutdown_aborts_a_blocked_upload_at_once(sshd: SshServer, proxy: FaultProxy) -> None:
    stop = threading.Event()
    raw = through(proxy, sshd)  # the default rule (60 s) would wait far longer
    with open_destination(raw, stop) as dest:
        dest.ensure_location()
        proxy.mode = "blackhole"
        outcome: list[str] = []

        def upload() -> None:
            try:
                dest.write("blocked.bin", Source.from_bytes(os.urandom(16 * MiB)))
            except DestinationError as exc:
                outcome.append(str(exc))

        worker = threading.Thread(target=upload)
        worker.start()
        deadline = time.monotonic() + 10
        while not dest.pool._connections or proxy.connections == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.5)  # let the upload fill the server's window and block
        stop.set()
        stopped = time.monotonic()
        worker.join(15)
        elapsed = time.monotonic() - stopped
        assert outcome, "the upload was still blocked 15 s after shutdown began"
        assert outcome[0] == (
            f"upload to 127.0.0.1:{proxy.port}: interrupted: service-backup is shutting down"
        )
        assert elapsed < 5, f"shutdown took {elapsed:.1f}s to abort the upload"
        with pytest.raises(DestinationError, match="shutting down"):
            dest.write("after.bin", Source.from_bytes(b"x"))  # refused before it starts


# ---------------------------------------------------------------------------- leftovers
def test_a_reset_leaves_a_partial_that_the_next_run_sweeps(sshd: SshServer, tmp_path: Path) -> None:
    raw = raw_config(sshd)
    base = Path(raw["destination"])
    today = datetime.now().astimezone().date()
    day = today.strftime("%Y/%m/%d")
    earlier = set(_descendants(sshd.pid))  # connections of earlier tests may still linger
    with (
        fault_proxy(sshd.port, mode="reset", after_bytes=2 * MiB) as proxy,
        open_destination(through(proxy, sshd, destination=str(base))) as dest,
    ):
        dest.ensure_location()
        message, elapsed = failing_write(dest, f"{day}/db/dump.rdb", 8 * MiB)
    assert message.startswith(f"SFTP connection to 127.0.0.1:{proxy.port} failed: "), message
    assert elapsed < 15
    # The reset connection's sftp-server may still be writing what it had received: wait
    # for sshd's connection processes to end before looking at (and ageing) the leftover.
    deadline = time.monotonic() + 20
    while set(_descendants(sshd.pid)) - earlier:
        assert time.monotonic() < deadline, "sshd's connection processes did not end"
        time.sleep(0.05)
    left = partials(base)
    assert len(left) == 1 and left[0].parent == base / day / "db", "expected one leftover"

    # Aged past the bound, leftovers in recent run folders are swept by the next run
    # (also below a deployment folder); nothing else is touched.
    old = time.time() - ORPHAN_AGE - 60

    def planted(path: Path, folder: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if folder else path.write_bytes(b"planted")
        os.utime(path, (old, old))
        return path

    def ours(folder: Path) -> Path:
        return folder / f"{PARTIAL_MARK}{uuid.uuid4().hex}"

    yesterday = (today - timedelta(days=1)).strftime("%Y/%m/%d")
    swept = [left[0], planted(ours(base / "redis" / yesterday)), planted(ours(base))]
    for path in swept[:1]:
        os.utime(path, (old, old))
    size = sum(p.stat().st_size for p in swept)
    fresh = ours(base / day / "db")  # another run's upload in progress
    fresh.write_bytes(b"in progress")
    kept = [
        fresh,
        planted(base / day / f"{PARTIAL_MARK}notours"),
        planted(base / day / f"x{PARTIAL_MARK}{uuid.uuid4().hex}"),
        planted(ours(base / day), folder=True),
        planted(ours(base / "notadate")),  # not a run folder
    ]
    with captured_logs() as lines, open_destination(raw) as dest:
        dest.ensure_location()
    assert [p for p in swept if p.exists()] == [], "old leftovers were not swept"
    assert [p for p in kept if not p.exists()] == [], "the sweep removed what it must not"
    assert [line for line in lines if "temporary file" in line] == [
        f"removed 3 temporary file(s) ({size} bytes) left in 127.0.0.1:{base} by an "
        "earlier failed upload"
    ], lines


# ------------------------------------------------------------------------------------ modes
def test_stored_files_and_created_folders_are_private_by_default(
    sshd: SshServer, tmp_path: Path
) -> None:
    raw = raw_config(sshd)
    base = Path(raw["destination"])
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:
        out.truncate(SPLIT_THRESHOLD)
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("a/streamed.txt", Source.from_bytes(b"s" * 300_000))
        dest.write_batch([("b/batched.txt", Source.from_bytes(b"b"))])
        source = Source(str(big), SPLIT_THRESHOLD, path=big)
        dest.write("c/split.bin", source)
        source.close()
    for name in ["a/streamed.txt", "b/batched.txt", "c/split.bin"]:
        mode = stat.S_IMODE((base / name).stat().st_mode)
        assert mode == 0o600, f"{name} is stored {mode:04o}, not 0600"
    for folder in [base, base / "a", base / "b", base / "c"]:
        mode = stat.S_IMODE(folder.stat().st_mode)
        assert mode == 0o700, f"{folder} was created {mode:04o}, not 0700"


def test_configured_modes_are_applied_exactly_and_existing_folders_kept(sshd: SshServer) -> None:
    existing = sshd.root / f"shared-{uuid.uuid4().hex}"
    existing.mkdir()
    os.chmod(existing, 0o751)  # noqa: S103 - an operator's own mode, kept
    raw = raw_config(sshd, destination=str(existing), file_mode="0664", folder_mode="0775")
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("x/streamed.txt", Source.from_bytes(b"s"))
        dest.write_batch([("y/batched.txt", Source.from_bytes(b"b"))])
    # Group-writable bits survive the server's umask (022): set again after creating.
    assert stat.S_IMODE((existing / "x" / "streamed.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE((existing / "y" / "batched.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE((existing / "x").stat().st_mode) == 0o775
    assert stat.S_IMODE(existing.stat().st_mode) == 0o751, "an existing folder was changed"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"file_mode": 384}, "file_mode: '384' is not an octal permission mode like '0600' "
         "(quote it: YAML reads an unquoted 0600 as the number 384)"),
        ({"file_mode": "0o1777"}, "file_mode: '0o1777' is not an octal permission mode"),
        ({"file_mode": "0400"}, "file_mode: 0400 leaves the owner without read and write"),
        ({"folder_mode": "0600"}, "folder_mode: 0600 leaves the owner without read, write and "
         "search"),
        ({"stall_timeout_seconds": 0}, "stall_timeout_seconds: 0 must be more than 0"),
        ({"stall_min_bytes_per_second": -1}, "stall_min_bytes_per_second: -1 must not be "
         "negative"),
    ],
)  # fmt: skip
def test_bad_modes_and_stall_settings_are_config_errors(
    sshd: SshServer, overrides: dict[str, Any], expected: str
) -> None:
    message = config_error(raw_config(sshd, **overrides))
    assert message.startswith(f"destinations[0].config.{expected}"), message
