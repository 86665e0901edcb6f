"""``service-backup restore``: the files of one complete run back into a folder, verified.

Only what the manifest lists is restored, each file streamed (bounded memory whatever its size)
into a temporary name beside its final one, hashed on the way, and renamed only once its size
and sha256 match the manifest, so a damaged object never appears under its name. Several files
are restored at once. A name stored %XX-escaped because it is not UTF-8 (``"escaped": true`` in
the manifest, see ``service_backup.names``) is written under its original bytes. Manifest paths
that are absolute or contain ``..`` refuse the whole restore before anything is written; an
existing symlink inside the target is never followed.

Exit status: 0 every file restored and verified; 1 a file missing, unreadable or not matching
(each named on stdout), a target whose final flush to disk failed, or a destination that could
not be listed; 2 bad arguments, a target
that is not empty (without ``--force``), or no complete run to restore (the run asked for is
incomplete, or there is none).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import itertools
import os
import queue
import stat
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import attrs

from .. import file_sync, kernel_copy
from ..destination import Destination
from ..errors import ObjectNotFound
from ..manifest import unsafe_path
from ..names import local_name, printable
from ..results import StoredFile
from . import _common

if TYPE_CHECKING:
    from ..catalog import RunFolder

HELP = "download and verify the files of the newest complete run (or of --date) into a folder"

READ_CHUNK = 1024 * 1024
#: Files of at least this size are hashed by a helper thread beside the copy; smaller ones
#: inline (several files at once already keep both cores busy).
PIPELINE_MIN = 8 * READ_CHUNK
#: Chunks read but not yet hashed, at most (per large file being restored).
PIPELINE_DEPTH = 2
TEMP_MARK = ".service-backup-restore-"
PROGRESS_EVERY = 2.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="DIR", help="folder to restore into")
    _common.add_destination_flag(parser, "default: the first, in config order, that has the run")
    parser.add_argument("--date", type=_common.parse_date, metavar="YYYY-MM-DD",
                        help="the run of that day (default: the newest complete run)")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="restore into DIR even when it is not empty")  # fmt: skip


class RestoreAborted(Exception):
    """Ctrl-C (or SIGTERM via the CLI) while files were being restored."""


@attrs.define
class Progress:
    """Counts shared by the workers, and a plain line on stderr every few seconds."""

    files: int
    total: int
    done_files: int = 0
    done_bytes: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add(self, size: int) -> None:
        with self.lock:
            self.done_bytes += size

    def file_done(self) -> None:
        with self.lock:
            self.done_files += 1

    def line(self) -> str:
        return (
            f"restore: {self.done_files}/{self.files} files, "
            f"{_common.human_size(self.done_bytes)} of {_common.human_size(self.total)}"
        )


def pick(folders: list[RunFolder], date: object) -> tuple[RunFolder | None, str]:
    """The run to restore from one destination, or why there is none."""
    if date is not None:
        matching = [f for f in folders if f.date == date]
        if not matching:
            return None, f"no run on {date}"
        if not matching[0].complete:
            why = matching[0].manifest_error or "no manifest"
            return None, f"the run of {date} is incomplete ({why})"
        return matching[0], ""
    complete = [f for f in folders if f.complete]
    if not complete:
        incomplete = len(folders)
        return None, "no complete run" + (f" ({incomplete} incomplete)" if incomplete else "")
    return complete[0], ""


def run(args: argparse.Namespace) -> int:
    config, registry = _common.load(args.config)
    target = Path(args.to)
    try:
        specs = _common.select(config, args.destination)
        check_target(target, args.force)
    except _common.UsageError as exc:
        _common.error(str(exc))
        return _common.EXIT_INVALID

    reasons: list[str] = []
    unlisted = False
    for spec in specs:
        name = spec.display_name
        try:
            with _common.opened(spec, registry) as destination:
                try:
                    folders = _common.run_folders_of(destination, config)
                except Exception as exc:
                    unlisted = True
                    reasons.append(f"{name} could not be listed: {_common.reason(exc, config)}")
                    continue
                folder, why = pick(folders, args.date)
                if folder is None:
                    reasons.append(f"{name}: {why}")
                    continue
                return restore_run(destination, name, folder, target, config)
        except Exception as exc:  # the destination could not even be opened
            unlisted = True
            reasons.append(f"{name} could not be opened: {_common.reason(exc, config)}")
    _common.error("nothing restored: " + "; ".join(reasons or ["no destinations configured"]))
    return _common.EXIT_FAILED if unlisted else _common.EXIT_INVALID


def check_target(target: Path, force: bool) -> None:
    if target.is_symlink() and not target.exists():
        raise _common.UsageError(f"--to {target} is a dangling symlink")
    if not target.exists():
        return
    if not target.is_dir():
        raise _common.UsageError(f"--to {target} exists and is not a folder")
    if not force and any(target.iterdir()):
        raise _common.UsageError(
            f"--to {target} is not empty: restore into an empty folder, or add --force "
            "to write over files of the same names"
        )


def restore_run(
    destination: Destination, name: str, folder: RunFolder, target: Path, config: object
) -> int:
    manifest = folder.manifest
    assert manifest is not None
    unsafe = [(f.path, why) for f in manifest.files if (why := unsafe_path(f.path))]
    if unsafe:
        listed = "; ".join(f"{path!r}: {why}" for path, why in unsafe[:5])
        _common.error(
            f"refusing to restore {name} {folder.date}: the manifest lists "
            f"{len(unsafe)} unsafe path(s): {listed}; nothing was restored"
        )
        return _common.EXIT_FAILED
    print(f"restoring {manifest.file_count} files ({_common.human_size(manifest.total_size)}) "
          f"of {folder.date} from {name} (backup {manifest.backup_guid}) to {target}",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _common.error(f"cannot create {target}: {exc.strerror or exc}")
        return _common.EXIT_FAILED
    started = time.monotonic()
    restorer = Restorer(destination, folder.prefix, target, config)
    problems = restorer.restore(manifest.files)
    elapsed = time.monotonic() - started
    for problem in problems:
        print(f"FAIL {problem}", flush=True)
    if restorer.flush_error is not None:
        print(f"FAIL {target}: not flushed to disk ({restorer.flush_error})", flush=True)
    failed = bool(problems) or restorer.flush_error is not None
    restored = manifest.file_count - len(problems)
    print(
        f"{'ok' if not failed else 'FAIL'} restored {restored} of {manifest.file_count} files "
        f"({_common.human_size(restorer.progress.done_bytes)}) of {folder.date} from {name} "
        f"to {target} in {elapsed:.1f}s" + ("" if not failed else "; see FAIL lines"),
        flush=True,
    )
    return _common.EXIT_OK if not failed else _common.EXIT_FAILED


def sync_file_system(folder: Path) -> str | None:
    """Flush the target's file system once (``syncfs``), like ``sync -f``: one flush for the
    whole tree rather than an fsync per file, and not every file system of the machine.

    Returns why the flush failed (None: every restored byte is on disk). ``syncfs`` reports
    a write-back error (``EIO``, ``ENOSPC``) that hit the file system since it was last
    reported, so a restore whose bytes did not reach the disk does not say ``ok``. Where libc
    has no ``syncfs`` the whole machine is flushed (``sync``), which reports nothing.
    """
    if not file_sync.has_syncfs():
        os.sync()
        return None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open it to flush it: {exc.strerror or exc}"
    try:
        file_sync.syncfs(fd, folder)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:  # a kernel without the call
            os.sync()
            return None
        return exc.strerror or str(exc)
    finally:
        os.close(fd)
    return None


class Restorer:
    """Restores files into ``target``, ``destination.file_concurrency`` at a time.

    The workers take the next file from one shared list (no future per file: with thousands
    of small files the executor's bookkeeping cost as much as the files). A file larger than
    ``PIPELINE_MIN`` is hashed by a helper thread while the worker goes on reading and
    writing, so that sha256 (about 0.6 s per GiB) overlaps the copy instead of adding to it;
    at most ``PIPELINE_DEPTH`` chunks wait for the hash, so memory stays bounded. From a
    destination that hands out real files (``local``) the kernel copies instead
    (``kernel_copy``) and the helper thread hashes the restored bytes as written.
    """

    def __init__(self, destination: Destination, prefix: str, target: Path, config: object):
        self.destination = destination
        self.prefix = prefix
        self.target = target
        self.config = config
        self.progress = Progress(files=0, total=0)
        #: Why the final flush of the target failed (``sync_file_system``); None: it did not.
        self.flush_error: str | None = None
        self.stop = threading.Event()
        self._dirs_lock = threading.Lock()
        #: Folders (relative, ``/``-separated) already created or checked: not a symlink.
        self._dirs: dict[str, str] = {"": os.fspath(target)}
        #: Temporary names: one random token per restore and a counter (``O_EXCL`` guards).
        self._token = os.urandom(6).hex()
        self._serial = itertools.count()

    def restore(self, files: tuple[StoredFile, ...]) -> list[str]:
        """Every file, several at once; the problems found, sorted by path.

        A destination with a ``serial_file_size`` (``local``) has its files up to that size
        restored one after another in this thread while the larger ones go to
        ``file_concurrency`` workers: a small file is a dozen short system calls, each of
        which hands the GIL to another thread and back (5,000 x 16 KiB with four threads:
        about 45 futex calls and one context switch per file, for no gain on two cores).
        """
        self.progress = Progress(files=len(files), total=sum(f.size for f in files))
        serial = self.destination.serial_file_size
        inline = [f for f in files if f.size <= serial] if serial else []
        pooled = [f for f in files if f.size > serial] if serial else list(files)
        ticker = threading.Thread(target=self._report, name="restore-progress", daemon=True)
        ticker.start()
        pending = iter(pooled)
        take = threading.Lock()
        outcomes: list[str] = []

        def work() -> None:
            while True:
                with take:
                    entry = next(pending, None)
                if entry is None:
                    return
                if problem := self.one(entry):
                    outcomes.append(problem)

        count = min(self.destination.file_concurrency, len(pooled))
        workers = [
            threading.Thread(target=work, name=f"restore_{i}", daemon=True)
            for i in range(max(1, count) if pooled else 0)
        ]
        try:
            for worker in workers:
                worker.start()
            try:
                one = self.one
                for entry in inline:
                    if problem := one(entry):
                        outcomes.append(problem)
                for worker in workers:
                    worker.join()
            except BaseException:
                self.stop.set()
                for worker in workers:
                    worker.join()
                raise
        finally:
            self.stop.set()
            ticker.join()
        print(self.progress.line(), file=sys.stderr, flush=True)
        self.flush_error = sync_file_system(self.target)
        return sorted(outcomes)

    def _report(self) -> None:
        while not self.stop.wait(PROGRESS_EVERY):
            print(self.progress.line(), file=sys.stderr, flush=True)

    def one(self, entry: StoredFile) -> str | None:
        """Restore one file; a one-line problem naming it, or None when it is in place."""
        if self.stop.is_set():
            return f"{entry.path}: not restored (interrupted)"
        temp: str | None = None
        try:
            # The original bytes, when the stored name is escaped (``names``).
            local = local_name(entry.path, True) if entry.escaped else entry.path
            folder, _, base = local.rpartition("/")
            parent = self._dirs.get(folder) or self._parent(folder)
            temp = f"{parent}/{TEMP_MARK}{self._token}-{next(self._serial)}"
            digest, size = self._download(f"{self.prefix}/{entry.path}", temp, entry.size)
            if size != entry.size:
                return f"{entry.path}: read {size} bytes, manifest says {entry.size}"
            if digest != entry.sha256:
                return (
                    f"{entry.path}: sha256 mismatch (stored object {digest}, "
                    f"manifest {entry.sha256}); not restored"
                )
            os.replace(temp, f"{parent}/{base}")
            temp = None
            self.progress.file_done()
            return None
        except RestoreAborted:
            return f"{entry.path}: not restored (interrupted)"
        except ObjectNotFound:
            return f"{entry.path}: missing at the destination"
        except OSError as exc:
            where = f" ({printable(os.fsdecode(exc.filename))})" if exc.filename else ""
            return f"{entry.path}: {exc.strerror or exc}{where}"
        except Exception as exc:
            return f"{entry.path}: {_common.reason(exc, self.config)}"  # type: ignore[arg-type]
        finally:
            if temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)

    def _download(self, key: str, temp: str, expected: int) -> tuple[str, int]:
        """Stream ``key`` into the new file ``temp``: (sha256 hex, bytes) of what was read.

        When the destination hands out a real file (``local``), the kernel copies it
        (``_copy_kernel``); otherwise the stream is read and written.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        with self.destination.open_read(key) as stream:
            fd = os.open(temp, flags, 0o600)
            try:
                if expected >= kernel_copy.KERNEL_COPY_MIN:
                    copied = self._copy_kernel(stream, fd, expected)
                    if copied is not None:
                        return copied
                if expected >= PIPELINE_MIN:
                    return self._copy_hashing_aside(stream, fd)
                return self._copy(stream, fd)
            finally:
                os.close(fd)

    def _copy_kernel(self, stream: IO[bytes], fd: int, expected: int) -> tuple[str, int] | None:
        """Copy a stream that is a regular file with ``copy_file_range``; None if it is not.

        The hash is of the bytes written to ``temp``, read back (``kernel_copy``): the very
        bytes that are renamed into place if it matches the manifest, which is the check that
        matters. Only an untouched stream (position 0) of a file of exactly the manifest's
        size is copied this way; anything else (a pipe, a socket, a plugin's own stream, a
        size that does not match) takes the reading path, which reports what it finds.
        """
        source = _file_descriptor(stream, expected)
        if source is None:
            return None

        def progress(n: int) -> None:
            if self.stop.is_set():
                raise RestoreAborted()
            self.progress.add(n)

        try:
            copied = kernel_copy.copy_hashing(source, fd, expected, progress=progress)
        except kernel_copy.Unsupported:
            return None
        size = copied.size
        if size == expected and os.pread(source, 1, expected):
            size = max(os.fstat(source).st_size, expected + 1)  # grew since: not this object
        return copied.sha256, size

    def _copy(self, stream: IO[bytes], fd: int) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        while chunk := stream.read(READ_CHUNK):
            if self.stop.is_set():
                raise RestoreAborted()
            written = os.write(fd, chunk)
            if written != len(chunk):  # a short write: the rest (or the error) follows
                _write_all(fd, memoryview(chunk)[written:])
            digest.update(chunk)
            size += len(chunk)
            self.progress.add(len(chunk))
        return digest.hexdigest(), size

    def _copy_hashing_aside(self, stream: IO[bytes], fd: int) -> tuple[str, int]:
        """``_copy`` with the hash in a helper thread (hashlib releases the GIL)."""
        digest = hashlib.sha256()
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=PIPELINE_DEPTH)

        def hash_chunks() -> None:
            while (chunk := chunks.get()) is not None:
                digest.update(chunk)

        hasher = threading.Thread(target=hash_chunks, name="restore-sha256", daemon=True)
        hasher.start()
        size = 0
        try:
            while chunk := stream.read(READ_CHUNK):
                if self.stop.is_set():
                    raise RestoreAborted()
                chunks.put(chunk)
                _write_all(fd, chunk)
                size += len(chunk)
                self.progress.add(len(chunk))
        finally:
            chunks.put(None)
            hasher.join()
        return digest.hexdigest(), size

    def _parent(self, folder: str) -> str:
        """The folder ``folder`` (relative) names, created as needed; never through a symlink.

        Each folder is checked (or created) once per restore, not once per file in it."""
        known = self._dirs.get(folder)
        if known is not None:
            return known
        current = self._dirs[""]
        done: list[str] = []
        for part in folder.split("/"):
            done.append(part)
            relative = "/".join(done)
            current = os.path.join(current, part)
            if relative in self._dirs:
                continue
            with self._dirs_lock:
                try:
                    info = os.lstat(current)
                except FileNotFoundError:
                    os.mkdir(current, 0o700)
                    self._dirs[relative] = current
                    continue
            if stat.S_ISLNK(info.st_mode):
                raise _common.UsageError(f"{printable(current)} is a symlink: not followed")
            if not stat.S_ISDIR(info.st_mode):
                raise _common.UsageError(f"{printable(current)} exists and is not a folder")
            self._dirs[relative] = current
        return current


def _file_descriptor(stream: IO[bytes], size: int) -> int | None:
    """The descriptor of ``stream`` if it is an unread regular file of ``size`` bytes."""
    try:
        fd = stream.fileno()
        if stream.tell() != 0 or os.lseek(fd, 0, os.SEEK_CUR) != 0:
            return None
        info = os.fstat(fd)
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        return None
    return fd


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a write may take fewer than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
