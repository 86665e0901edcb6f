"""Reading ahead (``_readahead``): the small files of a listed folder read in order come from
batches of many files per exchange, against the real sshd. Each test checks the bytes handed
out against what the server holds, and that the batch path (an in-memory stream) was taken
where it should be, so a regression to one-file-per-exchange or to wrong bytes both fail."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from service_backup.commands.restore import Restorer
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.results import StoredFile
from service_backup.source import Source
from service_backup_scp import _readahead, _sftp
from service_backup_scp.destination import ScpDestination
from tests.faultproxy import fault_proxy
from tests.readers import read_concurrently

from .server import SshServer
from .test_faults import open_destination as open_with_stop
from .test_faults import through
from .test_reads import stored
from .test_scp import open_destination, raw_config

SMALL = _readahead.SMALL_FILE


def listed(dest: ScpDestination, folder: str) -> list[str]:
    """List ``folder`` as the catalog does before a restore (this is what enables batches)."""
    return [info.key for info in dest.list(f"{folder}/")]


def read(dest: ScpDestination, key: str) -> tuple[bytes, bool]:
    """The whole object, and whether it came from a batch (an in-memory stream)."""
    with dest.open_read(key) as stream:
        return _read_all(stream), isinstance(stream, io.BytesIO)


def _read_all(stream: IO[bytes]) -> bytes:
    parts = []
    while chunk := stream.read(1024 * 1024):
        parts.append(chunk)
    return b"".join(parts)


def test_small_files_around_the_request_size_read_back_byte_identical(sshd: SshServer) -> None:
    """Sizes 0, 1, around 16 KiB and around the one-request limit: every file's bytes exact;
    all but the first (and the one above the limit, which streams) from batches."""
    raw = raw_config(sshd)
    sizes = [0, 1, 2, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, SMALL - 1, SMALL, SMALL + 1]
    files = {f"r/{n:02d}": os.urandom(size) for n, size in enumerate(sizes)}
    for key, data in files.items():
        stored(raw, key, data)
    with open_destination(raw) as dest:
        assert listed(dest, "r") == sorted(files)
        batched = []
        for key, data in files.items():
            got, from_batch = read(dest, key)
            assert got == data, f"{key}: read {len(got)} bytes, not the {len(data)} stored"
            if from_batch:
                batched.append(key)
        above = f"r/{len(sizes) - 1:02d}"
        assert above not in batched, f"{above} ({SMALL + 1} bytes) must stream, not batch"
        expected = [k for k in files if k not in ("r/00", above)]
        assert batched == expected, f"read from batches: {batched}, expected {expected}"


def test_without_a_listing_or_for_a_single_read_nothing_is_read_ahead(sshd: SshServer) -> None:
    """A manifest read per run folder (one read per folder) or reads of unlisted folders
    stream as before: no speculative batch."""
    raw = raw_config(sshd)
    for n in range(5):
        stored(raw, f"u/{n}", b"x" * n)
    with open_destination(raw) as dest:
        assert all(not read(dest, f"u/{n}")[1] for n in range(5)), "unlisted folder batched"
        listed(dest, "u")
        assert not read(dest, "u/3")[1], "the first read of a listed folder was batched"
        assert dest._ahead._bytes == 0, "bytes were planned for a folder read only once"


def test_a_listed_file_removed_since_is_not_found(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    paths = {n: stored(raw, f"gone/{n}", os.urandom(100)) for n in range(4)}
    with open_destination(raw) as dest:
        listed(dest, "gone")
        paths[2].unlink()
        assert read(dest, "gone/0")[0] == paths[0].read_bytes()
        assert read(dest, "gone/1") == (paths[1].read_bytes(), True), "no batch was read"
        with pytest.raises(ObjectNotFound, match="gone/2 not found"):
            dest.open_read("gone/2")
        assert read(dest, "gone/3") == (paths[3].read_bytes(), True)


@pytest.mark.parametrize("change", ["shorter", "longer", "same size"])
def test_a_file_changed_since_the_listing_is_read_as_it_now_is(
    sshd: SshServer, change: str
) -> None:
    """The listed size only plans the batch: a file that is now shorter or longer is read the
    ordinary way to its real end (the caller's size check sees it), never cut to the listing."""
    raw = raw_config(sshd)
    paths = [stored(raw, f"c/{n}", os.urandom(20_000)) for n in range(4)]
    now = {
        "shorter": os.urandom(19_999),
        "longer": os.urandom(20_001),
        "same size": os.urandom(20_000),
    }[change]
    with open_destination(raw) as dest:
        listed(dest, "c")
        paths[2].write_bytes(now)
        read(dest, "c/0")
        for n in (1, 2, 3):
            got, _ = read(dest, f"c/{n}")
            want = now if n == 2 else paths[n].read_bytes()
            assert got == want, f"c/{n}: read {len(got)} bytes, the server holds {len(want)}"


def test_a_write_into_the_folder_drops_what_was_read_ahead(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    for n in range(6):
        stored(raw, f"w/{n}", b"old %d" % n)
    with open_destination(raw) as dest:
        listed(dest, "w")
        read(dest, "w/0")
        assert read(dest, "w/1") == (b"old 1", True), "no batch was read"
        dest.write("w/4", Source.from_bytes(b"new 4"))
        assert read(dest, "w/4")[0] == b"new 4", "a batch fetched before a write handed out"
        assert dest._ahead._bytes == 0, "the folder's batch was kept after a write into it"


def test_many_readers_at_once_get_exact_bytes_from_bounded_batches(sshd: SshServer) -> None:
    """restore's pattern: file_concurrency threads taking the listed files in order."""
    raw = raw_config(sshd)
    files = {f"m/{n:04d}": os.urandom(8 * 1024 + n) for n in range(600)}
    for key, data in files.items():
        stored(raw, key, data)
    lock = threading.Lock()
    wrong: list[str] = []
    batched = [0]
    most_held = [0]
    with open_destination(raw) as dest:
        listed(dest, "m")

        def read_one(key: str) -> None:
            data, from_batch = read(dest, key)
            with lock:
                batched[0] += from_batch
                most_held[0] = max(most_held[0], dest._ahead._bytes)
                if data != files[key]:
                    wrong.append(key)

        read_concurrently(sorted(files), ScpDestination.file_concurrency, read_one)
        assert not wrong, f"{len(wrong)} file(s) read back wrong, e.g. {wrong[0]}"
        assert batched[0] >= 500, f"only {batched[0]} of 600 files came from batches"
        assert most_held[0] <= _readahead.CACHE_BYTES, f"{most_held[0]} bytes held ahead"
        assert dest._ahead._bytes == 0, "bytes still planned after every file was read"


def test_read_small_many_hands_out_only_exact_files(sshd: SshServer) -> None:
    """The batch primitive: exact bytes at sizes 0, 1 and one request; None for a size that
    does not match (either way); the open error for a missing file; the channel stays clean."""
    raw = raw_config(sshd)
    chunk = _sftp.OPENSSH_CHUNK
    contents = [b"", b"a", os.urandom(chunk - 1), os.urandom(chunk), os.urandom(100)]
    paths = [stored(raw, f"p/{n}", data) for n, data in enumerate(contents)]
    remote = [str(path) for path in paths] + [str(Path(raw["destination"]) / "p" / "absent")]
    sizes = [len(data) for data in contents[:4]] + [99, 0]
    with open_destination(raw) as dest, dest.pool.session() as session:
        found = _sftp.read_small_many(session.client, remote, sizes)
        assert found[:4] == contents[:4], "a file of the expected size was not read exactly"
        assert found[4] is None, "a file longer than expected was handed out cut"
        assert isinstance(found[5], OSError) and found[5].errno == errno.ENOENT, found[5]
        sizes[4] = 101
        assert _sftp.read_small_many(session.client, remote[4:5], sizes[4:5]) == [None], (
            "a file shorter than expected was handed out"
        )
        assert _sftp.read_small_many(session.client, remote[:2], sizes[:2]) == contents[:2]


def test_a_batch_frozen_by_the_server_fails_each_read_with_the_stall(sshd: SshServer) -> None:
    with fault_proxy(sshd.port) as proxy:
        raw: dict[str, Any] = through(proxy, sshd, stall_timeout_seconds=2)
        for n in range(10):
            stored(raw, f"s/{n}", os.urandom(1000))
        with open_with_stop(raw) as dest:
            listed(dest, "s")
            read(dest, "s/0")
            proxy.mode = "blackhole"
            with pytest.raises(DestinationError, match=r"download from .*: stalled"):
                dest.open_read("s/1")


@pytest.mark.parametrize("limit", ["REMEMBER", "MAX_AGE"])
def test_past_its_limits_nothing_is_handed_out_from_memory(
    sshd: SshServer, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    """A folder beyond the names remembered, or bytes older than MAX_AGE: each file is read
    the ordinary way, with the same bytes."""
    monkeypatch.setattr(_readahead, limit, 0)
    raw = raw_config(sshd)
    files = {f"l/{n}": os.urandom(500 + n) for n in range(6)}
    for key, data in files.items():
        stored(raw, key, data)
    with open_destination(raw) as dest:
        listed(dest, "l")
        for key, data in files.items():
            got, from_batch = read(dest, key)
            assert got == data, f"{key}: read {len(got)} bytes, not the {len(data)} stored"
            assert not from_batch, f"{key} was handed out from memory past {limit}"


def test_restore_through_batches_reports_a_file_cut_or_changed_since_listing(
    sshd: SshServer, tmp_path: Path
) -> None:
    """End to end with the core's Restorer (8 threads): every intact file restored byte for
    byte, a file cut on the server after the listing reported by size, one rewritten with
    the same size reported by sha256; neither appears under its name."""
    raw = raw_config(sshd)
    files = {f"f{n:03d}": os.urandom(4000 + n) for n in range(150)}
    paths = {name: stored(raw, f"2026/01/02/d/{name}", data) for name, data in files.items()}
    entries = tuple(
        StoredFile(f"d/{name}", len(data), hashlib.sha256(data).hexdigest())
        for name, data in sorted(files.items())
    )
    with open_destination(raw) as dest:
        listed(dest, "2026/01/02/d")
        os.truncate(paths["f070"], 100)
        paths["f120"].write_bytes(os.urandom(len(files["f120"])))
        problems = Restorer(dest, "2026/01/02", tmp_path, None).restore(entries)
        planned = dest._ahead._folders["2026/01/02/d"].frontier
        assert planned == len(files), f"batches planned up to file {planned} of {len(files)}"
    assert len(problems) == 2, problems
    assert problems[0].startswith("d/f070: read 100 bytes, manifest says 4070"), problems[0]
    assert problems[1].startswith("d/f120: sha256 mismatch"), problems[1]
    restored = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    assert set(restored) == set(files) - {"f070", "f120"}, "a damaged file was put in place"
    wrong = [name for name, data in restored.items() if data != files[name]]
    assert not wrong, f"restored with wrong bytes: {wrong[:5]}"


def test_a_reader_going_on_into_the_next_folder_is_batched_from_its_first_file(
    sshd: SshServer,
) -> None:
    raw = raw_config(sshd)
    files = {f"n/{folder}/{n}": os.urandom(300 + n) for folder in "ab" for n in range(4)}
    for key, data in files.items():
        stored(raw, key, data)
    with open_destination(raw) as dest:
        listed(dest, "n/a")
        listed(dest, "n/b")
        came = {key: read(dest, key) for key in files}
    wrong = [key for key, (data, _) in came.items() if data != files[key]]
    assert not wrong, f"read back wrong: {wrong}"
    batched = [key for key, (_, from_batch) in came.items() if from_batch]
    assert batched == [key for key in files if key != "n/a/0"], f"from batches: {batched}"
