"""The ``local`` destination: a folder on this VM or an NFS mount.

Durability is paid once per run, like ``cp -r`` + ``sync``, not once per file: ``write`` does
not fsync; ``sync`` (which the core calls before and after the run manifest) flushes the whole
destination file system with one ``syncfs``. The manifest is the run's commit point: a crash
before it is durable leaves an incomplete folder, never a complete-looking one. So that this
final ``syncfs`` does not wait for a whole run's bytes to reach the disk, every
``WRITEBACK_EVERY`` bytes of small files a ``syncfs`` runs on a thread while the next files are
written (big files start their own write-back, ``kernel_copy``); it makes nothing durable
that the final one would not, it only starts the disk's work earlier. Both are the core's
``file_sync.FolderFlush``, the same that ``restore`` flushes its target with.

A new file is created under its final name (``O_EXCL``: never through a planted link, never
over anything) and removed again if the copy fails, so a failed write leaves nothing behind.
Only when a file of that name already exists (a re-run into a folder an earlier run left
incomplete) is it written under a temporary name and renamed over the old one once its last
byte arrived, so a failed copy never replaces the file already there. Writing under a
temporary name every time would cost a rename and a random name per file (about a tenth of
the time of a run of small files) and buy nothing: until the manifest is written, a folder's
files are not presented as a backup, and a crash mid-file leaves a folder without one.

The bytes are copied by the core (``Source.copy_into``): through the kernel
(``copy_file_range``) for files above ``serial_file_size``, with the sha256 taken from the
bytes as written, read back from the page cache; with ``read`` and ``write`` for small files
and where the kernel cannot copy (another file system type on older kernels, NFS without
server-side copy). Either way the ``Source``'s checks fail a file that changed.

On NFS, ``syncfs`` makes the client write back and COMMIT every dirty page of that mount to the
server; what the server then guarantees is its export's (``sync`` exports: on stable storage;
``async`` exports: in the server's memory only). The rename is atomic on the server.
"""

from __future__ import annotations

import contextlib
import datetime
import operator
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.file_sync import WRITEBACK_EVERY, FolderFlush
from service_backup.file_sync import has_syncfs as _has_syncfs
from service_backup.layout import check_key
from service_backup.source import Source

from .config import LocalConfig, parse_mode

PARTIAL_MARK = ".service-backup-partial-"
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Files up to this size are written one at a time, in the uploading thread (see
#: ``serial_file_size``).
SMALL_FILE = 256 * 1024


class LocalDestination(Destination):
    file_concurrency = 4
    #: The core's upload writes files up to this size one after another in the calling thread
    #: and only larger ones ``file_concurrency`` at a time. A small file is a handful of short
    #: system calls, each of which hands the GIL to another upload thread and back: four
    #: threads copying 4 KiB files ran at half the speed of one (20,000 x 4 KiB on tmpfs:
    #: 2.8 s with four, 1.15 s with one). Files above it spend their time in long reads and
    #: writes that release the GIL, and two or more at once copy twice as fast as one.
    serial_file_size = SMALL_FILE
    can_rename = True

    def __init__(self, config: LocalConfig, context: DestinationContext) -> None:
        self.base = Path(config.path)
        self.name = context.display_name
        # getattr: subclasses (the conformance suite's self-test) bring config classes of their own.
        self.file_mode = parse_mode(getattr(config, "file_mode", "0600"))
        self.folder_mode = parse_mode(getattr(config, "folder_mode", "0700"))
        self._base = str(self.base)
        self._folders: set[str] = set()  # made (or seen) by this instance: one mkdir each
        umask = _umask()
        self._open_mode = self.file_mode & 0o600 if umask is None else self.file_mode
        self._chmod = umask is None or bool(self.file_mode & umask)
        #: Where libc has ``syncfs``, ``sync`` needs only to know that something was written;
        #: elsewhere it fsyncs every file written, listed here.
        self._syncfs = _has_syncfs()
        self._dirty = False
        self._written: list[str] = []
        self._lock = threading.Lock()
        #: The flush of the destination folder, whose descriptor is open from before the first
        #: file is written until ``close``: every ``syncfs`` goes through it, so a write-back
        #: error since then is reported to one of them (a descriptor opened later would not
        #: hear of it). Early write-backs: every ``WRITEBACK_EVERY`` bytes of small files.
        self._flush: FolderFlush | None = None

    def _path(self, key: str) -> Path:
        try:
            return self.base.joinpath(*check_key(key).split("/"))
        except DestinationError:
            raise DestinationError(f"invalid key {key!r}") from None

    def _file(self, key: str) -> str:
        """``_path`` as a string, without pathlib's per-call parsing (once per file).

        A key is clean when, framed by slashes, it holds no empty, ``.`` or ``..`` segment:
        ``check_key``'s rule as three substring tests instead of a split and a scan.
        """
        framed = f"/{key}/"
        if "//" in framed or "/./" in framed or "/../" in framed:
            raise DestinationError(f"invalid key {key!r}")
        return f"{self._base}/{key}"

    def _create(self, path: str) -> int:
        """A new file, never through a planted link, with exactly ``file_mode`` (not umask's).

        The ``fchmod`` is skipped where the umask cannot have taken a bit of ``file_mode``.
        Open for reading too: ``Source.copy_into`` has the kernel copy a big file and hashes
        the bytes as written, read back through this descriptor.
        """
        fd = os.open(path, _CREATE, self._open_mode)
        if self._chmod:
            try:
                os.fchmod(fd, self.file_mode)
            except OSError:
                os.close(fd)
                raise
        return fd

    def describe(self, prefix: str) -> str:
        return str(self.base / prefix)

    def ensure_location(self) -> None:
        try:
            _make_folders(self.base, self.folder_mode)
        except OSError as exc:
            raise DestinationError(f"cannot create folder {self.base}: {exc.strerror}") from None

    def write(self, key: str, source: Source) -> ObjectInfo:
        """Copy ``source`` to ``key``: created under its final name, or staged when one exists.

        Safe from several threads; the core calls it from one thread for files up to
        ``serial_file_size`` and from ``file_concurrency`` threads for larger ones.
        """
        final = self._file(key)
        folder = final.rpartition("/")[0]
        if folder not in self._folders:
            try:
                _make_folders(Path(folder), self.folder_mode)
            except OSError as exc:
                target = exc.filename or final
                raise DestinationError(f"cannot write {target}: {exc.strerror or exc}") from None
            self._folders.add(folder)
        flush = self._flush
        if flush is None and self._syncfs:
            flush = self._open_flush()  # before this file's first byte: see ``_flush``
        partial: str | None = None
        try:
            fd = self._create(final)
            created = final
        except FileExistsError:
            partial = f"{folder}/{PARTIAL_MARK}{os.urandom(16).hex()}"
            try:
                fd = self._create(partial)
            except OSError as exc:
                raise DestinationError(f"cannot write {final}: {exc.strerror or exc}") from None
            created = partial
        except OSError as exc:
            raise DestinationError(f"cannot write {final}: {exc.strerror or exc}") from None
        try:
            try:
                size = source.copy_into(fd)  # bytes written to a file this call created
            finally:
                os.close(fd)
            if partial is not None:
                os.replace(partial, final)
        except OSError as exc:
            _unlink(created)
            raise DestinationError(f"cannot write {final}: {exc.strerror or exc}") from None
        except BaseException:
            _unlink(created)
            raise
        if flush is not None:
            self._dirty = True
            if size < SMALL_FILE:  # bigger ones: ``kernel_copy`` starts their write-back
                flush.wrote(size)
        else:
            self._wrote(final)
        return ObjectInfo(key, size)

    def _open_flush(self) -> FolderFlush:
        with self._lock:
            if self._flush is None:
                try:
                    self._flush = FolderFlush(self.base, WRITEBACK_EVERY)
                except OSError as exc:
                    raise DestinationError(f"cannot open {self.base}: {exc.strerror}") from None
            return self._flush

    def close(self) -> None:
        with self._lock:
            flush, self._flush = self._flush, None
        if flush is not None:
            flush.close()

    def _wrote(self, path: str) -> None:
        """Note ``path`` for ``sync``: a flag with ``syncfs``, the path itself without."""
        if self._syncfs:
            self._dirty = True
        else:
            with self._lock:
                self._written.append(path)

    def sync(self) -> None:
        """Everything written so far, durable: one ``syncfs`` of the destination file system.

        Without ``syncfs`` (not Linux), every file written and its folder are fsynced from a
        pool instead: the same guarantee, paid per file.
        """
        if self._syncfs:
            try:
                if self._flush is not None:
                    self._flush.settle()  # an early write-back's error fails this flush
                if not self._dirty:
                    return
                self._dirty = False  # before the call: a write that ends during it sets it again
                # No flush yet: only renames since ``__init__`` (files written by another run).
                (self._flush or self._open_flush()).finish()
            except OSError as exc:
                self._dirty = True
                raise DestinationError(
                    f"cannot flush {self.base} to disk: {exc.strerror}"
                ) from None
            return
        with self._lock:
            written, self._written = self._written, []
        if not written:
            return
        from concurrent.futures import ThreadPoolExecutor

        try:
            with ThreadPoolExecutor(8, thread_name_prefix="fsync") as pool:
                list(pool.map(_fsync_path, written))
                list(pool.map(_fsync_dir, {os.path.dirname(p) for p in written}))
        except OSError as exc:
            raise DestinationError(f"cannot flush {self.base} to disk: {exc.strerror}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Walk only the folder the prefix names (a run's folder, not every run ever made).

        Keys are built as strings from ``scandir`` names (pathlib parsed each of them twice:
        a quarter of a 5,000-file restore's time went to listing the run). The order is
        ``os.walk``'s: a folder's files by name, then its subfolders by name; symbolic links
        to folders are not followed. A folder that cannot be read fails the listing.
        """
        for key, entry in self._entries(prefix, ordered=True):
            yield _info(key, entry.stat())

    def list_keys(self, prefix: str) -> Iterator[str]:
        """``list``'s keys, in no particular order, without a ``stat`` of each file.

        ``restore`` chooses its run from the names alone; a ``stat`` (and an ``ObjectInfo``
        with a time) of every file of every run was a sixth of a small-file restore's CPU.
        """
        for key, _ in self._entries(prefix, ordered=False):
            yield key

    def _entries(self, prefix: str, ordered: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
        folder = prefix.rpartition("/")[0]
        start = self._file(folder) if folder else str(self.base)
        yield from self._walk(start, folder, prefix, ordered)

    def _walk(
        self, path: str, key_folder: str, prefix: str, ordered: bool
    ) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            with os.scandir(path) as scan:
                entries = sorted(scan, key=_NAME) if ordered else list(scan)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:  # an unreadable folder must not look like an empty one
            raise DestinationError(f"cannot list {path}: {exc.strerror}") from None
        folders = []
        for entry in entries:
            key = f"{key_folder}/{entry.name}" if key_folder else entry.name
            if entry.is_dir():
                if not entry.is_symlink():
                    folders.append((entry.path, key))
            elif not entry.name.startswith(PARTIAL_MARK) and key.startswith(prefix):
                yield key, entry
        for folder, key in folders:
            if prefix.startswith(key + "/") or key.startswith(prefix):
                yield from self._walk(folder, key, prefix, ordered)

    def open_read(self, key: str) -> IO[bytes]:
        """The file itself, unbuffered (a ``FileIO``): every reader reads it in large pieces.

        ``_file``, not ``_path``: pathlib's parsing was half of a small file's restore. No
        ``BufferedReader`` on top: its set-up costs an ``ioctl`` (is it a terminal?) and an
        ``lseek`` per file, and it only copied what ``restore`` reads in one piece anyway.
        """
        try:
            return open(self._file(key), "rb", buffering=0)
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._file(key))
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None
        return _info(key, st)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None

    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """``os.replace`` each file (atomic, same file system), then prune emptied folders."""
        made: set[Path] = set()
        emptied: set[Path] = set()
        for old, new in moves:
            source, target = self._path(old), self._path(new)
            try:
                if target.parent not in made:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made.add(target.parent)
                os.replace(source, target)
                self._wrote(str(target))
            except FileNotFoundError:
                if not source.exists():
                    raise ObjectNotFound(f"{old} not found in {self.base}") from None
                raise DestinationError(f"cannot move {old} to {target}: no such folder") from None
            except OSError as exc:
                raise DestinationError(f"cannot move {old} to {target}: {exc.strerror}") from None
            emptied.add(source.parent)
        for folder in made:
            _fsync_dir(folder)
        for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
            while folder != self.base and self.base in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent


_NAME = operator.attrgetter("name")


def _make_folders(path: Path, mode: int) -> None:
    """``mkdir -p`` giving the folders it creates ``mode`` (existing ones are left alone)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        os.chmod(folder, mode)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _umask() -> int | None:
    """This process's umask, read without changing it (``Umask:`` in /proc, Linux 4.7+)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # staged, then renamed: its new name is in the list too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    """``modified`` too: the sweep of stale staged runs goes by it."""
    return ObjectInfo(key, st.st_size, datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC))
