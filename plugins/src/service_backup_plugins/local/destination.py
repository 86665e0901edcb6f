"""The ``local`` destination: a folder on this VM or an NFS mount.

Each file is written under a temporary name beside its final one and renamed once its last
byte arrived, so a failed copy never leaves a half-written file under the final name, nor
replaces the file already there. Durability is paid once per run, like ``cp -r`` + ``sync``,
not once per file: ``write`` does not fsync; ``sync`` (which the core calls before and after
the run manifest) flushes the whole destination file system with one ``syncfs``. A crash
before the manifest is durable leaves an incomplete folder, never a complete-looking one.

On NFS, ``syncfs`` makes the client write back and COMMIT every dirty page of that mount to the
server; what the server then guarantees is its export's (``sync`` exports: on stable storage;
``async`` exports: in the server's memory only). The rename is atomic on the server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.layout import MiB, check_key
from service_backup.source import Source

from .config import LocalConfig, parse_mode

PARTIAL_MARK = ".service-backup-partial-"
COPY_BUFFER = MiB


class LocalDestination(Destination):
    file_concurrency = 4
    can_rename = True

    def __init__(self, config: LocalConfig, context: DestinationContext) -> None:
        self.base = Path(config.path)
        self.name = context.display_name
        # getattr: subclasses (the conformance suite's self-test) bring config classes of their own.
        self.file_mode = parse_mode(getattr(config, "file_mode", "0600"))
        self.folder_mode = parse_mode(getattr(config, "folder_mode", "0700"))
        self._folders: set[Path] = set()  # made (or seen) by this instance: one mkdir each
        self._written: list[Path] = []  # for the fallback when syncfs is unavailable
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        try:
            return self.base.joinpath(*check_key(key).split("/"))
        except DestinationError:
            raise DestinationError(f"invalid key {key!r}") from None

    def _create(self, path: str, _flags: int) -> int:
        """A new file, never through a planted link, with exactly ``file_mode`` (not umask's)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
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
        final = self._path(key)
        partial = final.with_name(f"{PARTIAL_MARK}{uuid.uuid4().hex}")
        try:
            if final.parent not in self._folders:
                _make_folders(final.parent, self.folder_mode)
                self._folders.add(final.parent)
            with source.open() as stream, open(partial, "wb", opener=self._create) as out:
                shutil.copyfileobj(stream, out, COPY_BUFFER)
                out.flush()
                size = os.fstat(out.fileno()).st_size
            os.replace(partial, final)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            target = exc.filename if exc.filename and exc.filename != str(partial) else final
            raise DestinationError(f"cannot write {target}: {exc.strerror or exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        with self._lock:
            self._written.append(final)
        return ObjectInfo(key=key, size=size)

    def sync(self) -> None:
        """Everything written so far, durable: one ``syncfs`` of the destination file system.

        Without ``syncfs`` (not Linux), every file written and its folder are fsynced from a
        pool instead: the same guarantee, paid per file.
        """
        with self._lock:
            written, self._written = self._written, []
        if not written:
            return
        try:
            if not _syncfs(self.base):
                with ThreadPoolExecutor(8, thread_name_prefix="fsync") as pool:
                    list(pool.map(_fsync_path, written))
                    list(pool.map(_fsync_dir, {p.parent for p in written}))
        except OSError as exc:
            raise DestinationError(f"cannot flush {self.base} to disk: {exc.strerror}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(PARTIAL_MARK):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.base).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    yield ObjectInfo(key=key, size=st.st_size)

    def open_read(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None
        return ObjectInfo(key=key, size=st.st_size)

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
                with self._lock:
                    self._written.append(target)
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


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` on the file system holding ``path``; False where libc has no syncfs."""
    call = getattr(_LIBC, "syncfs", None)
    if call is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if call(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(path))
    finally:
        os.close(fd)
    return True


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # staged, then renamed: its new name is in the list too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
