"""The core ``Source``: exact length, changes blamed on the file, sha256 of what was handed out.

Big sources are hashed on a thread of their own while the destination reads (``_Hasher``);
small ones as they are read. Either way the hash is of the bytes handed out, in file order,
whatever order and piece sizes the reads came in.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from service_backup.errors import SourceError
from service_backup.layout import MiB
from service_backup.source import BACKGROUND_HASH_MIN, Source, SourceFile

BIG = BACKGROUND_HASH_MIN + 5 * MiB + 123
SMALL = 16 * 1024


def make_file(tmp_path: Path, size: int, name: str = "dump.rdb") -> tuple[SourceFile, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    st = path.stat()
    return SourceFile(path=path, relative=name, size=size, mtime_ns=st.st_mtime_ns), data


def hasher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "source-sha256"]


def wait_for_no_hasher(timeout: float = 10) -> None:
    for thread in hasher_threads():
        thread.join(timeout)
    assert not hasher_threads(), "a hasher thread is still running after its Source was done"


@pytest.mark.parametrize("size", [0, 1, SMALL, BIG], ids=["empty", "one", "small", "big"])
@pytest.mark.parametrize("piece", [8 * 1024, MiB, 3 * MiB + 1], ids=["8k", "1m", "3m+1"])
def test_sequential_reads_hash_the_file(tmp_path: Path, size: int, piece: int) -> None:
    file, data = make_file(tmp_path, size)
    source = Source.from_file(file)
    with source.open() as stream:
        got = b"".join(iter(lambda: stream.read(piece), b""))
    assert got == data, "the stream did not hand out the file"
    assert source.sha256 == hashlib.sha256(data).hexdigest(), (
        f"sha256 wrong for a {size}-byte file read in {piece}-byte pieces"
    )
    wait_for_no_hasher()


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["small", "big"])
def test_offset_reads_from_threads_in_any_order(tmp_path: Path, size: int) -> None:
    file, data = make_file(tmp_path, size)
    source = Source.from_file(file)
    piece = max(1, size // 7)
    offsets = list(range(0, size, piece))
    random.Random(size).shuffle(offsets)
    got: dict[int, bytes] = {}

    def read(offset: int) -> None:
        got[offset] = source.read_at(offset, min(piece, size - offset))

    threads = [threading.Thread(target=read, args=(o,)) for o in offsets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert b"".join(got[o] for o in sorted(got)) == data
    assert source.sha256 == hashlib.sha256(data).hexdigest(), (
        f"sha256 wrong when pieces were read in the order {offsets}"
    )
    source.close()


def test_rereads_after_close_and_rewind_are_hashed_once(tmp_path: Path) -> None:
    """A plugin retrying from the start (new stream after closing the first) gets one hash."""
    file, data = make_file(tmp_path, BIG)
    source = Source.from_file(file)
    with source.open() as stream:
        stream.read(3 * MiB)
        stream.seek(MiB)
        stream.read(5 * MiB)
    with source.open() as stream:
        assert stream.read() == data
    assert source.sha256 == hashlib.sha256(data).hexdigest(), "re-read bytes hashed twice"


def test_hash_is_of_the_bytes_handed_out(tmp_path: Path) -> None:
    """Rewritten on disk behind the Source's back (size and mtime kept): what was read counts.

    The Source cannot see this change; its hash must still describe the bytes the destination
    received, not what the file holds by the time a background thread gets to it.
    """
    file, data = make_file(tmp_path, BIG)
    source = Source.from_file(file)
    first = source.read_at(0, 2 * MiB)
    with open(file.path, "r+b") as f:
        f.write(b"\0" * (2 * MiB))
    os.utime(file.path, ns=(file.mtime_ns or 0, file.mtime_ns or 0))
    rest = source.read_at(2 * MiB, BIG - 2 * MiB)
    assert first == data[: 2 * MiB]
    assert source.sha256 == hashlib.sha256(first + rest).hexdigest()
    source.close()


def test_small_sources_are_hashed_without_a_thread(tmp_path: Path) -> None:
    """A thread per 16 KiB file would cost more than its hash (the many-files runs)."""
    started: list[str] = []
    original = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        original(thread)

    file, data = make_file(tmp_path, BACKGROUND_HASH_MIN - 1)
    source = Source.from_file(file)
    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        assert source.read_all() == data
        digest = source.sha256
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    assert digest == hashlib.sha256(data).hexdigest()
    assert "source-sha256" not in started, "a small source started a hasher thread"


def test_a_source_dropped_half_read_lets_its_hasher_end(tmp_path: Path) -> None:
    file, _ = make_file(tmp_path, BIG)
    source = Source.from_file(file)
    source.read_at(0, 2 * MiB)
    source.read_at(2 * MiB, 2 * MiB)  # a full batch: the hasher thread is running
    assert hasher_threads(), "no hasher thread for a big source"
    del source
    gc.collect()
    wait_for_no_hasher()


ChangeFile = Callable[[Path], None]


def shrink(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 100)


def grow(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"appended while the run was uploading")


def rewrite(path: Path) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"rewritten")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["small", "big"])
@pytest.mark.parametrize(
    ("change", "message"),
    [(shrink, "ended early"), (grow, "changed size"), (rewrite, "was modified")],
    ids=["short", "grown", "modified"],
)
def test_a_changed_file_fails_before_the_last_bytes(
    tmp_path: Path, size: int, change: ChangeFile, message: str
) -> None:
    file, _ = make_file(tmp_path, size)
    change(file.path)
    source = Source.from_file(file)
    piece = size // 4 + 1
    handed_out = 0
    with pytest.raises(SourceError, match=message) as info, source.open() as stream:
        while chunk := stream.read(piece):
            handed_out += len(chunk)
    assert "dump.rdb" in str(info.value), "the error does not name the file"
    assert handed_out < size, "the last bytes were handed out before the change was noticed"
    with pytest.raises(SourceError):
        source.sha256  # noqa: B018 - not all bytes were handed out
