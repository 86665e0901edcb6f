"""Kernel copies (``copy_file_range``) of big files: the upload to a local destination.

Real files on the test's file system. ``os.copy_file_range`` is only ever wrapped to count
its calls (the kernel still copies) or, to force the fallback paths, replaced by one that
fails the way an unsupported file system does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service_backup import kernel_copy
from service_backup.destination import DestinationContext
from service_backup.errors import SourceError
from service_backup.kernel_copy import CHUNK, KERNEL_COPY_MIN, Unsupported, copy_hashing
from service_backup.source import Source, SourceFile
from service_backup_plugins.local.config import LocalConfig
from service_backup_plugins.local.destination import PARTIAL_MARK, LocalDestination

pytestmark = pytest.mark.skipif(
    not kernel_copy.available(), reason="os.copy_file_range is not available here"
)

SIZES = [
    0,
    KERNEL_COPY_MIN - 1,
    KERNEL_COPY_MIN,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    2 * CHUNK + 1,
]
IDS = ["empty", "min-1", "min", "chunk-1", "chunk", "chunk+1", "2chunk+1"]


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``copy_file_range`` calls (their byte counts); the real call does the copy."""
    calls: list[int] = []
    real = os.copy_file_range

    def counting(src: int, dst: int, count: int, *args: int) -> int:
        n = real(src, dst, count, *args)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "copy_file_range", counting)
    return calls


def refuse_with(monkeypatch: pytest.MonkeyPatch, code: int, after: int = 0) -> list[int]:
    """``copy_file_range`` failing with ``code`` from its call number ``after`` on."""
    calls: list[int] = []
    real = os.copy_file_range

    def refusing(src: int, dst: int, count: int, *args: int) -> int:
        calls.append(count)
        if len(calls) > after:
            raise OSError(code, os.strerror(code))
        return real(src, dst, count, *args)

    monkeypatch.setattr(os, "copy_file_range", refusing)
    return calls


def listed(path: Path, data: bytes) -> SourceFile:
    """``path`` written with ``data`` and listed as a run would, an hour after its mtime.

    The mtime is set back an hour so that any write during the copy changes it, whatever the
    file system's timestamp granularity.
    """
    path.write_bytes(data)
    st = path.stat()
    old = st.st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(old, old))
    return SourceFile(path=path, relative=path.name, size=len(data), mtime_ns=old)


def new_file(path: Path, flags: int = os.O_RDWR) -> int:
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def ends(folder: Path) -> Iterator[tuple[int, int]]:
    """``folder/src`` open for reading and a new ``folder/dst``, both closed afterwards."""
    src = os.open(folder / "src", os.O_RDONLY)
    try:
        dst = new_file(folder / "dst")
        try:
            yield src, dst
        finally:
            os.close(dst)
    finally:
        os.close(src)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalDestination]:
    destination = LocalDestination(
        LocalConfig(path=str(tmp_path / "dest")), DestinationContext("local")
    )
    destination.ensure_location()
    yield destination


# --------------------------------------------------------------------------- kernel_copy itself
@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_copy_hashing_copies_and_hashes_the_written_bytes(
    tmp_path: Path, size: int, kernel_calls: list[int]
) -> None:
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    with ends(tmp_path) as (src, dst):
        copied = copy_hashing(src, dst, size)
    assert (tmp_path / "dst").read_bytes() == data, f"{size}-byte copy is not byte-identical"
    assert copied.size == size
    assert copied.sha256 == hashlib.sha256(data).hexdigest(), f"sha256 wrong for {size} bytes"
    assert len(kernel_calls) == -(-size // CHUNK), (
        f"expected one copy_file_range per {CHUNK}-byte chunk, got {kernel_calls}"
    )


def test_copy_hashing_reports_a_short_source(tmp_path: Path) -> None:
    data = os.urandom(CHUNK + 5)
    (tmp_path / "src").write_bytes(data)
    with ends(tmp_path) as (src, dst):
        copied = copy_hashing(src, dst, 2 * CHUNK)
    assert copied.size == len(data), "a source shorter than asked must end the copy early"
    assert copied.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("code", sorted(kernel_copy.UNSUPPORTED), ids=errno.errorcode.get)
def test_unsupported_first_call_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    (tmp_path / "src").write_bytes(os.urandom(KERNEL_COPY_MIN))
    refuse_with(monkeypatch, code)
    with ends(tmp_path) as (src, dst), pytest.raises(Unsupported):
        copy_hashing(src, dst, KERNEL_COPY_MIN)
    assert (tmp_path / "dst").stat().st_size == 0, "an unsupported copy must write nothing"


def test_kernel_refusing_half_way_finishes_through_user_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * CHUNK + 7)
    (tmp_path / "src").write_bytes(data)
    calls = refuse_with(monkeypatch, errno.EXDEV, after=1)
    with ends(tmp_path) as (src, dst):
        copied = copy_hashing(src, dst, len(data))
    assert len(calls) == 4, f"every chunk should try the kernel first: {calls}"
    assert (tmp_path / "dst").read_bytes() == data, "the rest was not copied through user space"
    assert copied.sha256 == hashlib.sha256(data).hexdigest()


def test_a_zero_answer_for_a_file_with_data_is_not_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems answer 0 for a file that has data: that is not a short file."""
    (tmp_path / "src").write_bytes(os.urandom(KERNEL_COPY_MIN))
    monkeypatch.setattr(os, "copy_file_range", lambda *args: 0)
    with ends(tmp_path) as (src, dst), pytest.raises(Unsupported):
        copy_hashing(src, dst, KERNEL_COPY_MIN)


def test_progress_may_stop_the_copy(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(os.urandom(3 * CHUNK))
    seen: list[int] = []

    class Stop(Exception):
        pass

    def progress(n: int) -> None:
        seen.append(n)
        raise Stop()

    with ends(tmp_path) as (src, dst), pytest.raises(Stop):
        copy_hashing(src, dst, 3 * CHUNK, progress=progress)
    assert seen == [CHUNK], "the copy went on after progress raised"
    assert not [t for t in threading.enumerate() if t.name == "copy-sha256"], (
        "the hashing thread outlived a stopped copy"
    )


# --------------------------------------------------------------------------- Source.copy_into
@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_copy_into_copies_checks_and_hashes(
    tmp_path: Path, size: int, kernel_calls: list[int]
) -> None:
    data = os.urandom(size)
    source = Source.from_file(listed(tmp_path / "dump.rdb", data))
    seen: list[int] = []
    source.on_read = seen.append
    fd = new_file(tmp_path / "copy")
    try:
        assert source.copy_into(fd) == size
    finally:
        os.close(fd)
        source.close()
    assert (tmp_path / "copy").read_bytes() == data, f"{size}-byte copy is not byte-identical"
    assert source.sha256 == hashlib.sha256(data).hexdigest(), f"sha256 wrong for {size} bytes"
    assert sum(seen) == size, f"progress heard of {sum(seen)} of {size} bytes"
    assert bool(kernel_calls) == (size >= KERNEL_COPY_MIN), (
        f"{size} bytes: copy_file_range calls {kernel_calls}, expected kernel copy only "
        f"from {KERNEL_COPY_MIN} bytes"
    )


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL])
def test_copy_into_falls_back_to_reading_when_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    data = os.urandom(CHUNK + 1)
    source = Source.from_file(listed(tmp_path / "dump.rdb", data))
    calls = refuse_with(monkeypatch, code)
    fd = new_file(tmp_path / "copy")
    try:
        assert source.copy_into(fd) == len(data)
    finally:
        os.close(fd)
        source.close()
    assert calls, "the kernel copy was not even tried"
    assert (tmp_path / "copy").read_bytes() == data, "the fallback copy is not byte-identical"
    assert source.sha256 == hashlib.sha256(data).hexdigest()


def test_copy_into_reads_for_memory_sources_and_write_only_descriptors(
    tmp_path: Path, kernel_calls: list[int]
) -> None:
    data = os.urandom(CHUNK + 1)
    memory = Source.from_bytes(data, "in-memory")
    on_disk = Source.from_file(listed(tmp_path / "dump.rdb", data))
    for source, name, flags in ((memory, "a", os.O_RDWR), (on_disk, "b", os.O_WRONLY)):
        fd = new_file(tmp_path / name, flags)
        try:
            assert source.copy_into(fd) == len(data)
        finally:
            os.close(fd)
            source.close()
        assert (tmp_path / name).read_bytes() == data, f"{source.name}: copy differs"
        assert source.sha256 == hashlib.sha256(data).hexdigest(), f"{source.name}: sha256"
    assert kernel_calls == [], "a source in memory or a write-only fd cannot be kernel-copied"


def _changing(path: Path, change: Callable[[], None]) -> Callable[[int], None]:
    """An ``on_read`` that changes the source once, after the first piece was copied."""
    done = []

    def hear(n: int) -> None:
        if not done:
            done.append(n)
            change()

    return hear


def _grow(path: Path) -> Callable[[], None]:
    def grow() -> None:
        with open(path, "ab") as f:
            f.write(b"more")

    return grow


def _shrink(path: Path) -> Callable[[], None]:
    return lambda: os.truncate(path, CHUNK + 10)


def _touch(path: Path) -> Callable[[], None]:
    def rewrite_first_byte() -> None:
        with open(path, "r+b") as f:
            f.write(b"\0")

    return rewrite_first_byte


CHANGES = {
    "grows": (_grow, "changed size"),
    "shrinks": (_shrink, "ended early"),
    "modified": (_touch, "modified during the run"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("existing", [False, True], ids=["new", "over-existing"])
def test_a_file_changing_during_the_kernel_copy_fails_and_leaves_nothing(
    tmp_path: Path, local: LocalDestination, kernel_calls: list[int], change: str, existing: bool
) -> None:
    make, message = CHANGES[change]
    path = tmp_path / "dump.rdb"
    file = listed(path, os.urandom(2 * CHUNK + 1))
    final = local.base / "run" / "dump.rdb"
    if existing:  # a re-run into a folder an earlier run left incomplete
        final.parent.mkdir(parents=True)
        final.write_bytes(b"the earlier run's file")
    source = Source.from_file(file)
    source.on_read = _changing(path, make(path))
    with pytest.raises(SourceError) as failure:
        local.write("run/dump.rdb", source)
    source.close()
    assert kernel_calls, "the change was not made during a kernel copy"
    assert str(path) in str(failure.value) and message in str(failure.value), (
        f"the error does not name the file and what happened: {failure.value}"
    )
    left = sorted(p.name for p in final.parent.iterdir()) if final.parent.exists() else []
    if existing:
        assert left == ["dump.rdb"], f"a partial file was left beside the old one: {left}"
        assert final.read_bytes() == b"the earlier run's file", "the old file was replaced"
    else:
        assert left == [], f"a failed copy left files under the run folder: {left}"
    assert not [n for n in left if n.startswith(PARTIAL_MARK)]


def test_local_write_of_a_big_file_is_a_kernel_copy(
    tmp_path: Path, local: LocalDestination, kernel_calls: list[int]
) -> None:
    data = os.urandom(CHUNK + 3)
    source = Source.from_file(listed(tmp_path / "dump.rdb", data))
    info = local.write("run/dump.rdb", source)
    source.close()
    assert info.size == len(data)
    assert (local.base / "run" / "dump.rdb").read_bytes() == data
    assert source.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(kernel_calls) == len(data), f"not copied by the kernel: {kernel_calls}"
