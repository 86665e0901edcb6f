"""Reading objects back (``open_read``, what ``verify`` and ``restore`` use) against the real
sshd: pipelined reads with a bounded number of requests and answers in memory, files that
change while they are read, many readers at once, and frozen reads aborted by the stall rule
or shutdown (through the TCP fault proxy)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.layout import MiB
from service_backup_scp import _sftp
from service_backup_scp._session import CHANNELS_PER_CONNECTION, CONNECTIONS, WINDOW_SIZE
from service_backup_scp.destination import ScpDestination
from tests.faultproxy import FaultProxy, fault_proxy
from tests.readers import read_concurrently

from .server import SshServer
from .test_faults import open_destination as open_with_stop
from .test_faults import through
from .test_scp import open_destination, raw_config


def stored(raw: dict[str, Any], key: str, data: bytes) -> Path:
    """Put ``data`` straight into the server's folder, as an earlier run would have."""
    path = Path(raw["destination"]) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[FaultProxy]:
    with fault_proxy(sshd.port) as running:
        yield running


def test_a_large_file_reads_back_exactly_with_bounded_requests(sshd: SshServer) -> None:
    """Several windows' worth, not a multiple of a request: every byte, in order, while at
    most READ_IN_FLIGHT requests are outstanding and answers wait in memory only as far as one
    bulk channel read brought them."""
    raw = raw_config(sshd)
    data = os.urandom(24 * MiB + 12345)
    stored(raw, "big/file.bin", data)
    with open_destination(raw) as dest:
        with dest.open_read("big/file.bin") as stream:
            reads = _sftp_stream(stream)
            pieces, most_asked, most_ready = [], 0, 0
            while piece := stream.read(MiB):
                pieces.append(piece)
                most_asked = max(most_asked, len(reads.asked))
                most_ready = max(most_ready, sum(map(_sftp.piece_size, reads.ready.values())))
        assert hashlib.sha256(b"".join(pieces)).digest() == hashlib.sha256(data).digest(), (
            "the bytes read back differ from the stored file"
        )
        assert 1 < most_asked <= _sftp.READ_IN_FLIGHT, (
            f"{most_asked} read requests were outstanding (pipelined, at most "
            f"{_sftp.READ_IN_FLIGHT} expected)"
        )
        assert most_ready <= _sftp.BULK_READ_DATA + _sftp.OPENSSH_CHUNK, (
            f"{most_ready} bytes of answers waited in memory ahead of the reader"
        )
        assert reads.finished, "the handle was not closed and every answer read at the end"


@pytest.mark.parametrize("bulk", [3, 1000, 255 * 1024 + 13])
def test_answers_cut_anywhere_by_channel_reads_are_joined_exactly(
    sshd: SshServer, monkeypatch: pytest.MonkeyPatch, bulk: int
) -> None:
    """Channel reads of a few bytes (answer headers cut in two), of 1000 bytes, and of exactly
    one answer: each answer that straddles two channel reads is completed from the next read
    and the rest of that read split where it lies (views, no copy); the bytes come back exact."""
    monkeypatch.setattr(_sftp, "BULK_READ_DATA", bulk)
    raw = raw_config(sshd)
    data = os.urandom(3 * MiB + 777 if bulk > 3 else 300_001)
    stored(raw, "cut/file.bin", data)
    with open_destination(raw) as dest:
        with dest.open_read("cut/file.bin") as stream:
            reads = _sftp_stream(stream)
            assert reads.replies.bulk == bulk, "the channel read size was not used"
            piece = reads.read()
            assert piece and all(isinstance(view, memoryview) for view in piece), (
                "an answer's data was copied, not handed out as views"
            )
            reads.put_back(piece)
            first = stream.read(100_000)
            rest = stream.read()
        assert isinstance(first, bytes) and isinstance(rest, bytes), (
            "open_read handed out something other than bytes"
        )
        assert first + rest == data, f"reads of {bulk} bytes from the channel garbled the file"


#: An SFTP DATA answer's bytes besides its data: length, kind, request number, data length.
DATA_ANSWER_HEAD = 4 + 1 + 4 + 4


def test_one_channel_read_takes_every_answer_outstanding() -> None:
    """One read takes whatever a stream's outstanding answers brought: fewer reads, fewer
    wake-ups (and with paramiko's own buffer, which moves what is left to its front after a
    partial read, fewer copies)."""
    owed = _sftp.READ_IN_FLIGHT * (_sftp.OPENSSH_CHUNK + DATA_ANSWER_HEAD)
    assert owed <= _sftp.BULK_READ_DATA, (
        f"a channel read of {_sftp.BULK_READ_DATA} bytes is less than the {owed} bytes of "
        "answers a stream may have outstanding"
    )


def test_receive_window_never_holds_a_stream_back() -> None:
    """paramiko gives the window back only once a tenth of it was read; until then the server
    may send at most the rest. Every answer a stream has outstanding must fit that rest, or
    sshd waits for our window adjustment in the middle of a stream."""
    owed = _sftp.READ_IN_FLIGHT * (_sftp.OPENSSH_CHUNK + DATA_ANSWER_HEAD)
    usable = WINDOW_SIZE - WINDOW_SIZE // 10
    assert owed <= usable, (
        f"{_sftp.READ_IN_FLIGHT} reads of {_sftp.OPENSSH_CHUNK} bytes ({owed} bytes) do not fit "
        f"the {usable} bytes of a {WINDOW_SIZE}-byte window the server can count on"
    )


def test_small_reads_and_read_all_and_empty_files(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    data = os.urandom(300_000)  # more than one request of 255 KiB
    stored(raw, "f/odd.bin", data)
    stored(raw, "f/empty", b"")
    with open_destination(raw) as dest:
        with dest.open_read("f/odd.bin") as stream:
            parts = []
            while part := stream.read(7777):
                assert len(part) <= 7777, "read(n) returned more than n bytes"
                parts.append(part)
        assert b"".join(parts) == data, "reading in small pieces lost or reordered bytes"
        with dest.open_read("f/odd.bin") as stream:
            assert stream.read() == data
        with dest.open_read("f/odd.bin") as stream:  # the manifest reader takes one read(n)
            first = stream.read(290_000)
            assert len(first) == 290_000, f"read(290000) of a longer file gave {len(first)} bytes"
            assert first + stream.read(64 * MiB) == data
        with dest.open_read("f/empty") as stream:
            assert stream.read() == b""
        buffer = bytearray(1000)
        with dest.open_read("f/odd.bin") as stream:
            assert stream.readinto(buffer) == 1000 and bytes(buffer) == data[:1000]


def test_a_missing_object_or_a_folder_is_not_found(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    stored(raw, "present/x", b"x")
    with open_destination(raw) as dest:
        with pytest.raises(ObjectNotFound, match="absent/x not found"):
            dest.open_read("absent/x")
        with pytest.raises(ObjectNotFound, match=r"present not found .*\(not a file\)"):
            dest.open_read("present")  # a folder opens for reading on OpenSSH: not an object
        # the channel that answered "no such file" is still good for the next read
        with dest.open_read("present/x") as stream:
            assert stream.read() == b"x"


def test_a_file_truncated_on_the_server_reads_short(sshd: SshServer) -> None:
    """The size found at open only plans the requests: a file cut meanwhile ends where the
    server says, so the caller's size check sees the loss."""
    raw = raw_config(sshd)
    data = os.urandom(3 * MiB)
    path = stored(raw, "t/cut.bin", data)
    with open_destination(raw) as dest, dest.open_read("t/cut.bin") as stream:
        os.truncate(path, MiB + 5)
        got = stream.read()
    assert got == data[: MiB + 5], f"read {len(got)} bytes of a file cut to {MiB + 5}"


def test_a_file_that_grew_after_open_is_read_to_its_new_end(sshd: SshServer) -> None:
    """Data past the planned end is not dropped: it is read on through a fresh handle."""
    raw = raw_config(sshd)
    data = os.urandom(600_000)
    path = stored(raw, "g/grow.bin", data)
    with open_destination(raw) as dest:
        with dest.open_read("g/grow.bin") as stream:
            with open(path, "ab") as out:
                out.write(b"tail" * 100_000)
            got = stream.read()
        assert got == data + b"tail" * 100_000, f"read {len(got)} bytes of a grown file"
        with dest.open_read("g/grow.bin") as stream:  # the channel is clean afterwards
            assert len(stream.read()) == len(data) + 400_000


def test_many_readers_at_once_each_have_a_channel(sshd: SshServer) -> None:
    """restore reads file_concurrency files at once: every reader gets a channel of its own
    (none waits on another's answers) and the pool stays within its limits."""
    raw = raw_config(sshd)
    files = {f"m/{n:03d}": os.urandom(16 * 1024 + n) for n in range(200)}
    for key, data in files.items():
        stored(raw, key, data)
    lock = threading.Lock()
    wrong: list[str] = []
    with open_destination(raw) as dest:
        open_now: set[int] = set()
        most_open = [0]

        def read_one(key: str) -> None:
            with dest.open_read(key) as stream:
                channel = id(_sftp_stream(stream).client)
                with lock:
                    assert channel not in open_now, "two open readers share a channel"
                    open_now.add(channel)
                    most_open[0] = max(most_open[0], len(open_now))
                data = stream.read()
                with lock:
                    open_now.discard(channel)
            if data != files[key]:
                wrong.append(key)

        read_concurrently(files, ScpDestination.file_concurrency, read_one, timeout=60)
        assert not wrong, f"{len(wrong)} file(s) read back wrong, e.g. {wrong[0]}"
        assert most_open[0] > 1, "the readers never overlapped"
        assert len(dest.pool._connections) <= CONNECTIONS
        assert all(c.channels <= CHANNELS_PER_CONNECTION for c in dest.pool._connections)


def test_a_frozen_read_is_aborted_by_the_stall_rule(sshd: SshServer, proxy: FaultProxy) -> None:
    raw = through(proxy, sshd, stall_timeout_seconds=2)
    stored(raw, "s/big.bin", os.urandom(32 * MiB))
    with open_with_stop(raw) as dest, dest.open_read("s/big.bin") as stream:
        assert stream.read(MiB)
        proxy.mode = "blackhole"
        started = time.monotonic()
        with pytest.raises(DestinationError) as info:
            while stream.read(MiB):
                pass
        elapsed = time.monotonic() - started
    message = str(info.value)
    assert f"download from 127.0.0.1:{proxy.port}: stalled: " in message, message
    assert elapsed < 15, f"the frozen read took {elapsed:.0f}s to be aborted (rule: 2 s)"


def test_shutdown_aborts_a_blocked_read_at_once(sshd: SshServer, proxy: FaultProxy) -> None:
    stop = threading.Event()
    raw = through(proxy, sshd)  # the default rule (60 s) would wait far longer
    stored(raw, "s/big.bin", os.urandom(32 * MiB))
    outcome: list[str] = []
    with open_with_stop(raw, stop) as dest:
        stream = dest.open_read("s/big.bin")
        assert stream.read(MiB)
        proxy.mode = "blackhole"
        reading = threading.Event()

        def read_on() -> None:
            reading.set()
            try:
                while stream.read(MiB):
                    pass
            except DestinationError as exc:
                outcome.append(str(exc))
            finally:
                stream.close()

        reader = threading.Thread(target=read_on)
        reader.start()
        assert reading.wait(10)
        time.sleep(0.5)  # let the reader use up what was buffered and block on the server
        stop.set()
        stopped = time.monotonic()
        reader.join(15)
        elapsed = time.monotonic() - stopped
        assert outcome, "the read was still blocked 15 s after shutdown began"
        assert "interrupted: service-backup is shutting down" in outcome[0], outcome[0]
        assert elapsed < 5, f"shutdown took {elapsed:.1f}s to abort the read"
        with pytest.raises(DestinationError, match="shutting down"):
            dest.open_read("s/big.bin")  # refused before it starts


def _sftp_stream(stream: object) -> _sftp.ReadStream:
    reads = getattr(stream, "_stream", None)
    assert isinstance(reads, _sftp.ReadStream), "open_read no longer reads through ReadStream"
    return reads
