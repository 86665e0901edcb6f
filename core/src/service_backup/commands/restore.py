"""``service-backup restore``: the files of one complete run back into a folder, verified.

Only what the manifest lists is restored, each file streamed (bounded memory whatever its size)
into a temporary name beside its final one, hashed on the way, and renamed only once its size
and sha256 match the manifest, so a damaged object never appears under its name. Several files
are restored at once. A name stored %XX-escaped because it is not UTF-8 (``"escaped": true`` in
the manifest, see ``service_backup.names``) is written under its original bytes. Manifest paths
that are absolute or contain ``..`` refuse the whole restore before anything is written; an
existing symlink inside the target is never followed. What is restored is made durable with
one ``syncfs`` of the target's file system at the end (``file_sync.FolderFlush``, whose
write-back starts while files are still being written). Progress goes to stderr: the display
of ``service_backup.progress`` on a terminal, a plain line every ``PROGRESS_EVERY`` seconds
anywhere else, nothing with ``--no-progress``.

What is hashed is exactly the bytes handed to ``write`` for the temporary file, from every
destination alike, local included; they are not read back. The file is one this process just
created (``O_EXCL``, never through a link) and nobody else writes, and ``write`` either takes
every byte given (short writes are continued) or fails the file, so its content is the bytes
hashed. Reading them back (as a kernel copy must, never seeing them) would re-read the same
page cache, and cost the hashing thread of a big file a sixth of its time.

Exit status: 0 every file restored and verified; 1 a file missing, unreadable or not matching
(each named on stdout), a target whose final flush to disk failed, or a destination that could
not be listed; 2 bad arguments, a target
that is not empty (without ``--force``), or no complete run to restore (the run asked for is
incomplete, or there is none).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import attrs

from .. import file_sync
from ..destination import Destination
from ..errors import ObjectNotFound
from ..manifest import unsafe_path
from ..names import local_name, printable
from ..progress import NULL_PROGRESS, ProgressReporter, is_terminal, progress_display
from ..results import StoredFile
from . import _common

if TYPE_CHECKING:
    from ..catalog import ChosenRun

HELP = "download and verify the files of the newest complete run (or of --date) into a folder"

READ_CHUNK = 1024 * 1024
#: Files up to this size are read in one piece (a read of one byte more than the manifest
#: says, to find a longer object), written with one ``write`` and hashed with one call.
SMALL_FILE = READ_CHUNK
#: Files of at least this size are hashed by a helper thread beside the copy; smaller ones
#: inline (several files at once already keep both cores busy).
PIPELINE_MIN = 8 * READ_CHUNK
#: Bytes per read of a big file: a chunk is read and written while it is still in the CPU's
#: cache, then hashed on the helper thread.
PIPELINE_CHUNK = READ_CHUNK
#: Chunks read but not yet hashed, at most (per large file being restored).
PIPELINE_DEPTH = 4
#: A big file's write-back to disk is started every this many bytes (``start_writeback``).
WRITEBACK_CHUNK = 8 * READ_CHUNK
TEMP_MARK = ".service-backup-restore-"
PROGRESS_EVERY = 2.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="DIR", help="folder to restore into")
    _common.add_destination_flag(parser, "default: the first, in config order, that has the run")
    parser.add_argument("--date", type=_common.parse_date, metavar="YYYY-MM-DD",
                        help="the run of that day (default: the newest complete run)")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="restore into DIR even when it is not empty")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress on stderr: neither the display drawn on a terminal "
                        "nor the plain lines written elsewhere")  # fmt: skip


class RestoreAborted(Exception):
    """Ctrl-C (or SIGTERM via the CLI) while files were being restored."""


@attrs.define
class Progress:
    """Counts shared by the workers, passed on to the progress display (a terminal's), or
    written as a plain line on stderr every few seconds (anywhere else)."""

    files: int
    total: int
    done_files: int = 0
    done_bytes: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    #: The display's line for this restore (``progress.NULL_PROGRESS``: none drawn).
    reporter: ProgressReporter = NULL_PROGRESS
    task: int = 0

    def add(self, size: int) -> None:
        with self.lock:
            self.done_bytes += size
        self.reporter.advance(self.task, bytes=size)

    def file_done(self) -> None:
        with self.lock:
            self.done_files += 1
        self.reporter.advance(self.task, files=1)

    def line(self) -> str:
        return (
            f"restore: {self.done_files}/{self.files} files, "
            f"{_common.human_size(self.done_bytes)} of {_common.human_size(self.total)}"
        )


def run(args: argparse.Namespace) -> int:
    from ..catalog import choose_run, run_root

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
                    folder, why = choose_run(destination, run_root(config), args.date)
                except Exception as exc:
                    unlisted = True
                    reasons.append(f"{name} could not be listed: {_common.reason(exc, config)}")
                    continue
                if folder is None:
                    reasons.append(f"{name}: {why}")
                    continue
                return restore_run(
                    destination, name, folder, target, config, progress=not args.no_progress
                )
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
    destination: Destination,
    name: str,
    folder: ChosenRun,
    target: Path,
    config: object,
    *,
    progress: bool = True,
) -> int:
    """Restore ``folder``'s run; progress on stderr (``progress``): the display on a
    terminal, else a plain line every ``PROGRESS_EVERY`` seconds."""
    manifest = folder.manifest
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
    with contextlib.ExitStack() as stack:
        display: ProgressReporter | None = None  # plain lines
        if not progress:
            display = NULL_PROGRESS
        elif is_terminal(sys.stderr):
            display = stack.enter_context(progress_display())
        restorer = Restorer(destination, folder.prefix, target, config, display=display, label=name)
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


def flush_target(flush: file_sync.FolderFlush) -> str | None:
    """Finish the target's flush (``syncfs``, like ``sync -f``: one flush for the whole tree
    rather than an fsync per file, and not every file system of the machine) and close it.

    Returns why the flush failed (None: every restored byte is on disk). ``syncfs`` reports
    a write-back error (``EIO``, ``ENOSPC``) that hit the file system since the target was
    opened, so a restore whose bytes did not reach the disk does not say ``ok``. Where libc
    has no ``syncfs`` the whole machine is flushed (``sync``), which reports nothing.
    """
    try:
        flush.finish()
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        flush.close()
    return None


class Restorer:
    """Restores files into ``target``, ``destination.file_concurrency`` at a time.

    The workers take the next file from one shared list (no future per file: with thousands
    of small files the executor's bookkeeping cost as much as the files). Every file is read
    from ``open_read``, written to its temporary name and hashed from the very bytes written;
    nothing is read back. A small file is one read, one write and one hash call. A file of
    at least ``PIPELINE_MIN`` is hashed by a helper thread while the worker goes on reading
    and writing, so that sha256 (about 0.6 s per GiB, on one core) overlaps the copy instead
    of adding to it; at most ``PIPELINE_DEPTH`` chunks wait for the hash, so memory stays
    bounded, and from a file (``local``) the chunks are read into the same few buffers.
    """

    def __init__(
        self,
        destination: Destination,
        prefix: str,
        target: Path,
        config: object,
        *,
        display: ProgressReporter | None = None,
        label: str = "restore",
    ):
        self.destination = destination
        #: Where progress goes: a display (``NULL_PROGRESS``: nowhere), or None for a plain
        #: line on stderr every ``PROGRESS_EVERY`` seconds and at the end.
        self.display = display
        self.label = label
        self.prefix = prefix
        self.target = target
        self.config = config
        self.progress = Progress(files=0, total=0)
        #: Why the final flush of the target failed (``flush_target``); None: it did not.
        self.flush_error: str | None = None
        self.stop = threading.Event()
        self._dirs_lock = threading.Lock()
        #: Folders (relative, ``/``-separated) already created or checked: not a symlink.
        self._dirs: dict[str, str] = {"": os.fspath(target)}
        #: Temporary names: one random token per restore and a counter (``O_EXCL`` guards).
        self._token = os.urandom(6).hex()
        self._serial = itertools.count()
        #: The target's file system flush, opened before the first byte is written.
        self._flush: file_sync.FolderFlush | None = None

    def restore(self, files: tuple[StoredFile, ...]) -> list[str]:
        """Every file, several at once; the problems found, sorted by path.

        A destination with a ``serial_file_size`` (``local``) has its files up to that size
        restored one after another in this thread while the larger ones go to
        ``file_concurrency`` workers: a small file is a dozen short system calls, each of
        which hands the GIL to another thread and back (5,000 x 16 KiB with four threads:
        about 45 futex calls and one context switch per file, for no gain on two cores).
        """
        total = sum(f.size for f in files)
        reporter = NULL_PROGRESS if self.display is None else self.display
        task = reporter.add_task(self.label, total, len(files))
        self.progress = Progress(files=len(files), total=total, reporter=reporter, task=task)
        try:
            self._flush = file_sync.FolderFlush(self.target)
        except OSError as exc:  # restored all the same; the restore then fails as not flushed
            self.flush_error = f"cannot open it to flush it: {exc.strerror or exc}"
        serial = self.destination.serial_file_size
        inline = [f for f in files if f.size <= serial] if serial else []
        pooled = [f for f in files if f.size > serial] if serial else list(files)
        ticker = None  # the plain lines' thread, when no display shows progress
        if self.display is None:
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
                if self._flush is not None:  # interrupted: nothing to report as flushed
                    self._flush.close()
                    self._flush = None
                raise
        finally:
            self.stop.set()
            if ticker is not None:
                ticker.join()
            flush, self._flush = self._flush, None
        if self.display is None:
            print(self.progress.line(), file=sys.stderr, flush=True)
        if flush is not None:
            self.flush_error = flush_target(flush)
        reporter.finish(task, ok=not outcomes and self.flush_error is None)
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
                if size > entry.size:
                    return f"{entry.path}: longer than the {entry.size} bytes the manifest says"
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
        """Stream ``key`` into the new file ``temp``: (sha256 hex, bytes) of what was written.

        At most one byte more than ``expected`` is read: an object found longer than the
        manifest says is not the file (whatever its length, it is not read to the end).
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        with self.destination.open_read(key) as stream:
            fd = os.open(temp, flags, 0o600)
            try:
                if expected <= SMALL_FILE:
                    return self._copy_small(stream, fd, expected)
                if expected >= PIPELINE_MIN:
                    return self._copy_hashing_aside(stream, fd, expected)
                return self._copy(stream, fd, expected)
            finally:
                os.close(fd)

    def _copy_small(self, stream: IO[bytes], fd: int, expected: int) -> tuple[str, int]:
        """A file of at most ``SMALL_FILE`` bytes: read whole, one write, one hash call."""
        data = _read_up_to(stream, expected + 1)
        if self.stop.is_set():
            raise RestoreAborted()
        if data:
            _write_all(fd, data)
        self._wrote(len(data))
        return hashlib.sha256(data).hexdigest(), len(data)

    def _wrote(self, n: int) -> None:
        """``n`` bytes of a file written, whose write-back nobody started yet."""
        self.progress.add(n)
        if self._flush is not None:
            self._flush.wrote(n)

    def _copy(self, stream: IO[bytes], fd: int, expected: int) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        while chunk := stream.read(min(READ_CHUNK, expected + 1 - size)):
            if self.stop.is_set():
                raise RestoreAborted()
            _write_all(fd, chunk)
            digest.update(chunk)
            size += len(chunk)
            self._wrote(len(chunk))
            if size > expected:
                break
        return digest.hexdigest(), size

    def _copy_hashing_aside(self, stream: IO[bytes], fd: int, expected: int) -> tuple[str, int]:
        """``_copy`` with the hash in a helper thread (hashlib releases the GIL).

        The helper hashes exactly the chunks written, in order. A file's stream is read into
        ``PIPELINE_DEPTH`` reused buffers (a buffer goes back to the reader once hashed); any
        other stream's ``read`` hands out chunks of its own. Every ``WRITEBACK_CHUNK`` the
        kernel is asked to start writing what was written to disk, so that the final flush
        does not begin with the whole file still in memory.
        """
        digest = hashlib.sha256()
        into = _readinto_of(stream)
        # A buffer (None: a turn, for streams that hand out chunks of their own) is taken
        # before each read and given back once its chunk is hashed: at most PIPELINE_DEPTH.
        free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        for _ in range(PIPELINE_DEPTH):
            free.put(bytearray(PIPELINE_CHUNK) if into is not None else None)
        hashed: queue.SimpleQueue[tuple[bytes | memoryview, bytearray | None] | None]
        hashed = queue.SimpleQueue()

        def hash_chunks() -> None:
            while (item := hashed.get()) is not None:
                digest.update(item[0])
                free.put(item[1])

        hasher = threading.Thread(target=hash_chunks, name="restore-sha256", daemon=True)
        hasher.start()
        size = flushed = 0
        try:
            while True:
                buffer = free.get()  # waits while PIPELINE_DEPTH chunks are not yet hashed
                want = min(PIPELINE_CHUNK, expected + 1 - size)
                chunk: bytes | memoryview
                if buffer is not None and into is not None:
                    view = memoryview(buffer)
                    chunk = view[: into(view[:want]) or 0]
                else:
                    chunk = stream.read(want)
                if not chunk:
                    break
                if self.stop.is_set():
                    raise RestoreAborted()
                _write_all(fd, chunk)
                hashed.put((chunk, buffer))
                size += len(chunk)
                self.progress.add(len(chunk))
                if size - flushed >= WRITEBACK_CHUNK:
                    file_sync.start_writeback(fd, flushed, size - flushed)
                    flushed = size
                if size > expected:
                    break
        finally:
            hashed.put(None)
            hasher.join()
        if size > flushed:
            file_sync.start_writeback(fd, flushed, size - flushed)
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


def _read_up_to(stream: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``: all of them, unless it ends first.

    A plain buffered file's ``read(n)`` returns fewer than ``n`` bytes only at its end; any
    other stream may return less before it (a socket, a raw stream), so it is read on.
    """
    data = stream.read(limit)
    if len(data) >= limit or type(stream) is io.BufferedReader:
        return data
    chunks = [data]
    got = len(data)
    while got < limit and (more := stream.read(limit - got)):
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def _readinto_of(stream: IO[bytes]) -> Callable[[memoryview], int | None] | None:
    """``stream.readinto`` when the stream is a file read straight into the caller's buffer.

    Only for files (``open(path, "rb")``): a plugin's stream hands out chunks of its own
    through ``read``, which is how its plugin tuned it.
    """
    raw = getattr(stream, "raw", stream)
    if isinstance(raw, io.FileIO):
        return stream.readinto  # type: ignore[attr-defined, no-any-return]
    return None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a write may take fewer than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
