"""``restore``'s copy paths and its flush, on real files.

Every size class (``_copy_small``, ``_copy``, ``_copy_hashing_aside``) from a plain file and
from a stream that is not one and hands out little per read; objects damaged the three ways
a store can damage them (same size other bytes, longer, shorter) never appear under their
name. The flush of the target (``file_sync.FolderFlush``) goes through one descriptor opened
before the first byte, starts early, and any error it meets fails the restore.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from service_backup import file_sync
from service_backup.commands.restore import PIPELINE_MIN, SMALL_FILE, TEMP_MARK, Restorer
from service_backup.destination import DestinationContext
from service_backup.file_sync import FolderFlush
from service_backup.layout import MiB
from service_backup.results import StoredFile
from service_backup.source import Source
from service_backup_plugins.local.config import LocalConfig
from service_backup_plugins.local.destination import LocalDestination

PREFIX = "2026/01/02"
#: One of each path through ``Restorer._download``, and the edges between them.
SIZES = {
    "empty": 0,
    "small": 16 * 1024,
    "small-edge": SMALL_FILE,
    "medium": SMALL_FILE + 1,
    "big-edge": PIPELINE_MIN,
    "big": PIPELINE_MIN + 3 * MiB + 5,
}


class Trickle(io.RawIOBase):
    """A plugin's stream over a file: no ``fileno``, at most ``piece`` bytes per read, and a
    count of every byte it hands out."""

    handed_out: dict[str, int] = {}

    def __init__(self, inner: Any, key: str, piece: int = 4000) -> None:
        super().__init__()
        self._inner, self._key, self._piece = inner, key, piece
        Trickle.handed_out[key] = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._piece]
        n = self._inner.readinto(view)
        Trickle.handed_out[self._key] += n
        return n

    def close(self) -> None:
        self._inner.close()
        super().close()


def local_destination(tmp_path: Path) -> LocalDestination:
    return LocalDestination(LocalConfig(path=str(tmp_path / "dest")), DestinationContext("t"))


def stored_tree(dest: LocalDestination, files: dict[str, bytes]) -> tuple[StoredFile, ...]:
    """``files`` written through the destination; their manifest entries."""
    for path, content in files.items():
        dest.write(f"{PREFIX}/{path}", Source.from_bytes(content, path))
    return tuple(
        StoredFile(path, len(content), hashlib.sha256(content).hexdigest())
        for path, content in sorted(files.items())
    )


def leftovers(target: Path) -> list[str]:
    return [p.name for p in target.rglob(f"{TEMP_MARK}*")]


@pytest.mark.parametrize("stream", ["file", "trickle"])
def test_every_size_restores_byte_for_byte_and_no_damaged_object_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    dest = local_destination(tmp_path)
    data = {f"{kind}/ok": os.urandom(size) for kind, size in SIZES.items()}
    damaged: dict[str, str] = {}
    for kind, size in SIZES.items():
        if size:
            data[f"{kind}/flip"] = os.urandom(size)
            damaged[f"{kind}/flip"] = "sha256 mismatch"
            data[f"{kind}/short"] = os.urandom(size)
            damaged[f"{kind}/short"] = f"read {size - 1} bytes, manifest says {size}"
        data[f"{kind}/long"] = os.urandom(size)
        damaged[f"{kind}/long"] = f"longer than the {size} bytes the manifest says"
    entries = stored_tree(dest, data)
    stored = tmp_path / "dest" / PREFIX
    for path in damaged:
        content = bytearray(data[path])
        if path.endswith("/flip"):
            content[len(content) // 2] ^= 0x01
        elif path.endswith("/short"):
            del content[-1]
        else:
            content += os.urandom(3 * MiB)  # far longer: must not be read to its end
        (stored / path).write_bytes(content)
    if stream == "trickle":
        real_open = LocalDestination.open_read
        monkeypatch.setattr(
            LocalDestination, "open_read", lambda self, key: Trickle(real_open(self, key), key)
        )
    target = tmp_path / "restored"
    target.mkdir()

    problems = Restorer(dest, PREFIX, target, None).restore(entries)

    found = {p.partition(": ")[0]: p.partition(": ")[2] for p in problems}
    assert set(found) == set(damaged), f"{stream}: problems {problems}"
    for path, why in damaged.items():
        assert found[path].startswith(why), f"{stream}: {path} reported as {found[path]!r}"
    restored = {
        str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()
    }
    intact = {p: c for p, c in data.items() if p not in damaged}
    assert restored.keys() == intact.keys(), (
        f"{stream}: files under their names are not exactly the intact ones: {sorted(restored)}"
    )
    for path, content in intact.items():
        assert restored[path] == content, f"{stream}: {path} restored with other bytes"
    assert leftovers(target) == [], f"{stream}: temporary files left: {leftovers(target)}"
    if stream == "trickle":
        for kind, size in SIZES.items():
            read = Trickle.handed_out[f"{PREFIX}/{kind}/long"]
            assert read <= size + 1 + 4000, (
                f"{kind}: {read} bytes read of an object longer than the manifest's {size}: "
                "a longer object must not be read to its end"
            )


def test_a_big_file_starts_its_write_back_over_every_byte_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that the final flush does not start with the whole file dirty in memory."""
    dest = local_destination(tmp_path)
    size = 3 * PIPELINE_MIN + 7
    entries = stored_tree(dest, {"big": os.urandom(size)})
    ranges: list[tuple[int, int]] = []
    real = file_sync.start_writeback
    monkeypatch.setattr(
        file_sync, "start_writeback", lambda fd, o, n: ranges.append((o, n)) or real(fd, o, n)
    )
    target = tmp_path / "restored"
    target.mkdir()
    assert Restorer(dest, PREFIX, target, None).restore(entries) == []
    assert len(ranges) >= 3, f"write-back started only {len(ranges)} time(s): {ranges}"
    position = 0
    for offset, length in ranges:
        assert offset == position and length > 0, f"write-back ranges not contiguous: {ranges}"
        position += length
    assert position == size, f"write-back covered {position} of {size} bytes"


def recording_syncfs(
    monkeypatch: pytest.MonkeyPatch, fail: dict[int, int] | None = None
) -> list[tuple[int, str, str]]:
    """``file_sync.syncfs`` recorded (descriptor, what, calling thread's name); call number N
    fails with ``fail[N]`` (an errno), the others are the real call."""
    calls: list[tuple[int, str, str]] = []
    real = file_sync.syncfs
    lock = threading.Lock()

    def syncfs(fd: int, what: Any) -> None:
        with lock:
            calls.append((fd, str(what), threading.current_thread().name))
            number = len(calls)
        if fail and number in fail:
            code = fail[number]
            raise OSError(code, os.strerror(code), str(what))
        real(fd, what)

    monkeypatch.setattr(file_sync, "syncfs", syncfs)
    return calls


needs_syncfs = pytest.mark.skipif(not file_sync.has_syncfs(), reason="libc without syncfs")


@needs_syncfs
def test_restore_writes_back_early_through_the_descriptor_it_opened_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = local_destination(tmp_path)
    entries = stored_tree(dest, {f"d/{n:02d}": os.urandom(16 * 1024) for n in range(40)})
    monkeypatch.setattr(file_sync, "WRITEBACK_EVERY", 64 * 1024)
    calls = recording_syncfs(monkeypatch)
    target = tmp_path / "restored"
    target.mkdir()
    restorer = Restorer(dest, PREFIX, target, None)
    assert restorer.restore(entries) == []
    assert restorer.flush_error is None
    threads = [thread for _, _, thread in calls]
    assert "writeback" in threads, f"no early write-back: {calls}"
    assert threads[-1] != "writeback", f"no final syncfs: {calls}"
    assert len({fd for fd, _, _ in calls}) == 1, f"syncfs went through several descriptors: {calls}"
    assert {what for _, what, _ in calls} == {str(target)}, calls


@needs_syncfs
def test_an_early_write_back_error_fails_the_restore_though_the_final_flush_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``syncfs`` reports a write-back error once: the early call that heard of it must
    not let the restore say ok (the final one, through the same descriptor, would not hear of
    it again)."""
    dest = local_destination(tmp_path)
    entries = stored_tree(dest, {f"d/{n:02d}": os.urandom(16 * 1024) for n in range(8)})
    monkeypatch.setattr(file_sync, "WRITEBACK_EVERY", 64 * 1024)
    calls = recording_syncfs(monkeypatch, fail={1: errno.EIO})
    target = tmp_path / "restored"
    target.mkdir()
    restorer = Restorer(dest, PREFIX, target, None)
    assert restorer.restore(entries) == [], "every file itself was restored"
    assert calls[0][2] == "writeback", f"the failing call was not an early one: {calls}"
    assert restorer.flush_error == "Input/output error", restorer.flush_error


def test_a_target_that_cannot_be_opened_to_flush_fails_the_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = local_destination(tmp_path)
    entries = stored_tree(dest, {"a": b"x"})
    target = tmp_path / "restored"
    target.mkdir()

    def refuse(folder: Any, every: Any = None) -> FolderFlush:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(folder))

    monkeypatch.setattr(file_sync, "FolderFlush", refuse)
    restorer = Restorer(dest, PREFIX, target, None)
    assert restorer.restore(entries) == []
    assert restorer.flush_error == "cannot open it to flush it: Permission denied"


def test_folder_flush_without_syncfs_flushes_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    monkeypatch.setattr(file_sync, "has_syncfs", lambda: False)
    monkeypatch.setattr(os, "sync", lambda: synced.append(True))
    flush = FolderFlush(tmp_path, every=10)
    flush.wrote(100)  # nothing runs early without syncfs
    flush.finish()
    flush.close()
    assert synced == [True], f"expected one os.sync, got {synced}"


@needs_syncfs
def test_folder_flush_falls_back_to_sync_on_a_kernel_without_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    recording_syncfs(monkeypatch, fail={1: errno.ENOSYS})
    monkeypatch.setattr(os, "sync", lambda: synced.append(True))
    flush = FolderFlush(tmp_path)
    flush.finish()
    flush.close()
    assert synced == [True], "ENOSYS from syncfs did not fall back to sync"
