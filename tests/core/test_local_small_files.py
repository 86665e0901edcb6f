"""The local destination's fast path for many small files, and what it must still guarantee.

Small files are copied one after another in the uploading thread (no hand-off between threads
per file), larger ones side by side; durability is one ``syncfs`` per ``sync``; a failure on
either side stops the other.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from loguru import logger

from service_backup import file_sync
from service_backup.config import DestinationSpec
from service_backup.context import RunContext
from service_backup.destination import DestinationContext
from service_backup.errors import BackupError, SourceError
from service_backup.processes import ProcessManager
from service_backup.source import scan_source
from service_backup.upload import run_jobs, upload
from service_backup_plugins.local import destination as local
from service_backup_plugins.local.config import LocalConfig


class Recording(local.LocalDestination):
    """The real destination, noting which thread wrote each key."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.threads: dict[str, str] = {}

    def write(self, key, source):  # type: ignore[no-untyped-def]
        self.threads[key] = threading.current_thread().name
        return super().write(key, source)


def _destination(root: Path, cls: type = local.LocalDestination) -> local.LocalDestination:
    return cls(LocalConfig(path=str(root)), DestinationContext("here", threading.Event()))  # type: ignore[no-any-return]


def _run() -> RunContext:
    return RunContext(
        config=None,  # type: ignore[arg-type]
        backup_guid="guid",
        started_at=datetime.datetime.now().astimezone(),
        processes=ProcessManager(),
        log=logger,
        upload_prefix="run",
    )


def _source_tree(root: Path) -> dict[str, bytes]:
    contents = {
        "a/one.bin": os.urandom(4096),
        "a/two.bin": b"",
        "b/big.bin": os.urandom(local.SMALL_FILE + 1),
        "b/c/three.bin": os.urandom(local.SMALL_FILE),
        "top.bin": os.urandom(10),
    }
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return contents


def test_small_files_are_copied_in_the_calling_thread_large_ones_by_workers(
    tmp_path: Path,
) -> None:
    contents = _source_tree(tmp_path / "src")
    dest = _destination(tmp_path / "dest", Recording)
    files = scan_source(tmp_path / "src")
    result = upload(DestinationSpec("local", None, "here"), dest, files, _run())

    caller = threading.current_thread().name
    assert dest.threads.pop("run/b/big.bin") != caller, "a large file was copied inline"
    assert set(dest.threads.values()) == {caller}, f"small files left the thread: {dest.threads}"
    stored = {s.path: s for s in result.stored}
    for name, data in contents.items():
        copy = tmp_path / "dest" / "run" / name
        assert copy.read_bytes() == data, f"{name}: stored bytes differ"
        assert copy.stat().st_mode & 0o777 == 0o600, f"{name}: mode {oct(copy.stat().st_mode)}"
        assert stored[name].sha256 == hashlib.sha256(data).hexdigest(), f"{name}: wrong sha256"
    folder = tmp_path / "dest" / "run" / "b" / "c"
    assert folder.stat().st_mode & 0o777 == 0o700, f"folder mode {oct(folder.stat().st_mode)}"


def test_a_small_file_that_grew_fails_inline_and_leaves_no_copy(tmp_path: Path) -> None:
    _source_tree(tmp_path / "src")
    files = scan_source(tmp_path / "src")
    with open(tmp_path / "src" / "a" / "one.bin", "ab") as grow:
        grow.write(b"more")
    dest = _destination(tmp_path / "dest")
    with pytest.raises(SourceError, match=r"one\.bin changed size"):
        upload(DestinationSpec("local", None, "here"), dest, files, _run())
    assert not (tmp_path / "dest" / "run" / "a" / "one.bin").exists(), "a partial copy was left"


def test_a_worker_failure_stops_the_inline_jobs_that_have_not_started() -> None:
    done: list[str] = []

    def worker_fails() -> None:
        raise BackupError("worker failed")

    def inline_waits_for_the_worker() -> str:
        (worker,) = [t for t in threading.enumerate() if t.name == "upload_0"] or [None]
        if worker is not None:
            worker.join(30)  # it records its error, then ends
        return "first"

    inline_later = [lambda: done.append("inline ran after the failure")] * 5
    with pytest.raises(BackupError, match="worker failed"):
        run_jobs([worker_fails], 1, _run(), inline=[inline_waits_for_the_worker, *inline_later])
    assert not done, f"inline jobs started after a worker failed: {done}"


def test_an_inline_failure_is_raised_after_the_running_workers_end() -> None:
    finished: list[str] = []

    def worker() -> str:
        finished.append("worker")
        return "w"

    def inline_fails() -> None:
        raise BackupError("inline failed")

    with pytest.raises(BackupError, match="inline failed"):
        run_jobs([worker], 1, _run(), inline=[inline_fails])
    assert not [t for t in threading.enumerate() if t.name.startswith("upload_")], "left running"


def test_results_keep_job_order_then_inline_order() -> None:
    results = run_jobs([lambda: 1, lambda: 2], 2, _run(), inline=[lambda: 3, lambda: 4])
    assert results == [1, 2, 3, 4], results


@pytest.mark.skipif(not local._has_syncfs(), reason="libc without syncfs")
def test_sync_is_one_syncfs_when_something_was_written_and_none_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = file_sync.syncfs
    monkeypatch.setattr(file_sync, "syncfs", lambda fd, path: calls.append(path) or real(fd, path))
    _source_tree(tmp_path / "src")
    dest = _destination(tmp_path / "dest")
    dest.sync()
    assert calls == [], "syncfs with nothing written"
    upload(DestinationSpec("local", None, "here"), dest, scan_source(tmp_path / "src"), _run())
    dest.sync()
    dest.sync()
    assert calls == [tmp_path / "dest"], f"expected one syncfs of the destination, got {calls}"
    dest.close()


@pytest.mark.skipif(not local._has_syncfs(), reason="libc without syncfs")
def test_write_back_starts_while_files_are_written_through_one_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``WRITEBACK_EVERY`` bytes a ``syncfs`` runs beside the upload (so the final one is
    short), all through the descriptor opened before the first file: a write-back error
    since then is reported to one of them."""
    monkeypatch.setattr(local, "WRITEBACK_EVERY", 8192)
    fds: list[int] = []
    finished = threading.Event()
    real = file_sync.syncfs

    def syncfs(fd: int, path: Path) -> None:
        fds.append(fd)
        real(fd, path)
        finished.set()

    monkeypatch.setattr(file_sync, "syncfs", syncfs)
    root = tmp_path / "src"
    root.mkdir()
    for n in range(8):
        (root / f"f{n}.bin").write_bytes(os.urandom(4096))
    dest = _destination(tmp_path / "dest")
    upload(DestinationSpec("local", None, "here"), dest, scan_source(root), _run())
    assert finished.wait(10), "no write-back was started while the files were written"
    dest.sync()
    assert len(fds) >= 2, f"expected early write-backs and the final syncfs, got {len(fds)} calls"
    assert len(set(fds)) == 1, f"syncfs went through several descriptors: {fds}"
    dest.close()
    assert dest._flush is None, "close left the destination's flush open"


@pytest.mark.skipif(not local._has_syncfs(), reason="libc without syncfs")
def test_a_failed_early_write_back_fails_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error of a background write-back is the run's: ``sync`` (before the manifest)
    raises it naming the destination, even though the final ``syncfs`` itself succeeds."""
    monkeypatch.setattr(local, "WRITEBACK_EVERY", 4096)
    failed = threading.Event()
    real = file_sync.syncfs

    def syncfs(fd: int, path: Path) -> None:
        if threading.current_thread().name == "writeback":
            failed.set()
            raise OSError(5, "Input/output error", str(path))
        real(fd, path)

    monkeypatch.setattr(file_sync, "syncfs", syncfs)
    root = tmp_path / "src"
    root.mkdir()
    (root / "one.bin").write_bytes(os.urandom(4096))
    dest = _destination(tmp_path / "dest")
    upload(DestinationSpec("local", None, "here"), dest, scan_source(root), _run())
    assert failed.wait(10), "no write-back was started"
    with pytest.raises(BackupError, match=r"cannot flush .*dest to disk: Input/output error"):
        dest.sync()
    dest.sync()  # the error was reported once; the retry flushes for real
    dest.close()


def test_without_syncfs_every_file_and_folder_written_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_has_syncfs", lambda: False)
    files_synced: list[str] = []
    folders_synced: list[str] = []
    monkeypatch.setattr(local, "_fsync_path", files_synced.append)
    monkeypatch.setattr(local, "_fsync_dir", folders_synced.append)
    contents = _source_tree(tmp_path / "src")
    dest = _destination(tmp_path / "dest")
    upload(DestinationSpec("local", None, "here"), dest, scan_source(tmp_path / "src"), _run())
    dest.sync()
    base = str(tmp_path / "dest" / "run")
    assert sorted(files_synced) == sorted(f"{base}/{name}" for name in contents), files_synced
    expected = {os.path.dirname(f"{base}/{name}") for name in contents}
    assert set(folders_synced) == expected, folders_synced


def test_scan_keeps_paths_keys_and_escapes_only_names_that_are_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    (root / "d" / "plain.txt").write_bytes(b"p")
    (root / "d" / "café.txt").write_bytes(b"c")
    os.close(os.open(os.fsencode(root / "d") + b"/raw\xff.txt", os.O_CREAT | os.O_WRONLY))
    found = {f.relative: f for f in scan_source(str(root) + "/")}
    assert set(found) == {"d/plain.txt", "d/café.txt", "d/raw%FF.txt"}, sorted(found)
    assert [k for k, f in found.items() if f.escaped] == ["d/raw%FF.txt"]
    plain = found["d/plain.txt"]
    assert isinstance(plain.path, Path) and plain.path == root / "d" / "plain.txt", plain.path
    assert plain.size == 1 and plain.mtime_ns == (root / "d" / "plain.txt").stat().st_mtime_ns


def test_list_walks_the_prefix_folder_in_walk_order_without_links_or_partials(
    tmp_path: Path,
) -> None:
    """``list`` builds keys from folder entries: same keys and order as ``os.walk`` gave."""
    root = tmp_path / "dest"
    for key in ("2026/12/01/b.rdb", "2026/12/01/a.rdb", "2026/12/01/sub/c.rdb", "2026/12/02/d"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(key.encode())
    (root / "2026/12/01" / f"{local.PARTIAL_MARK}x").write_bytes(b"half")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not a backup")
    (root / "2026/12/01/linked").symlink_to(outside, target_is_directory=True)
    dest = _destination(root)
    keys = [(o.key, o.size) for o in dest.list("2026/12/01/")]
    assert keys == [
        ("2026/12/01/a.rdb", 16),
        ("2026/12/01/b.rdb", 16),
        ("2026/12/01/sub/c.rdb", 20),
    ], f"listing gave {keys}: a link was followed, a partial file shown, or the order changed"
    assert [o.key for o in dest.list("2026/12/0")] == [
        "2026/12/01/a.rdb",
        "2026/12/01/b.rdb",
        "2026/12/01/sub/c.rdb",
        "2026/12/02/d",
    ], "a prefix that ends inside a folder name must list every folder it matches"
    assert list(dest.list("2027/")) == [], "a folder that does not exist lists nothing"


def _grown(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"more")


def _shrunk(path: Path) -> None:
    os.truncate(path, 100)


def _modified(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"\0")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks


@pytest.mark.parametrize(
    ("change", "message"),
    [(_grown, "changed size"), (_shrunk, "ended early"), (_modified, "modified during the run")],
    ids=["grown", "shrunk", "modified"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "over-existing"])
def test_a_small_file_changed_since_listed_fails_and_leaves_nothing(
    tmp_path: Path, change: Callable[[Path], None], message: str, existing: bool
) -> None:
    """The one-``pread`` copy of a small file checks size and mtime before writing a byte."""
    root = tmp_path / "src"
    root.mkdir()
    path = root / "small.bin"
    path.write_bytes(os.urandom(16 * 1024))
    (file,) = scan_source(root)
    change(path)
    dest = _destination(tmp_path / "dest")
    final = tmp_path / "dest" / "run" / "small.bin"
    if existing:
        final.parent.mkdir(parents=True)
        final.write_bytes(b"the earlier run's file")
    with pytest.raises(SourceError) as failure:
        upload(DestinationSpec("local", None, "here"), dest, [file], _run())
    assert str(path) in str(failure.value) and message in str(failure.value), (
        f"the error does not name the file and what happened: {failure.value}"
    )
    left = sorted(p.name for p in final.parent.iterdir()) if final.parent.exists() else []
    if existing:
        assert left == ["small.bin"], f"a partial file was left beside the old one: {left}"
        assert final.read_bytes() == b"the earlier run's file", "the old file was replaced"
    else:
        assert left == [], f"a failed copy left files under the run folder: {left}"
    dest.close()


def test_a_small_file_copy_hashes_exactly_the_bytes_stored(tmp_path: Path) -> None:
    root = tmp_path / "src"
    contents = {f"f{n}.bin": os.urandom(n * 1000) for n in (0, 1, 7, 255)}
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    dest = _destination(tmp_path / "dest")
    result = upload(DestinationSpec("local", None, "here"), dest, scan_source(root), _run())
    for entry in result.stored:
        stored = (tmp_path / "dest" / "run" / entry.path).read_bytes()
        assert stored == contents[entry.path], f"{entry.path}: stored bytes differ from source"
        assert entry.sha256 == hashlib.sha256(stored).hexdigest(), f"{entry.path}: wrong sha256"
    dest.close()
