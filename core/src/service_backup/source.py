"""The files a run uploads, and the one object through which every destination reads them.

The core owns reading the source. A destination's ``write`` receives a ``Source``: its size,
an exact-length reader, and the path for plugins that read by offset. Whatever way a plugin
reads, the ``Source`` blames the source (``SourceError`` naming the file) when it ends early,
grows or changes, and computes the sha256 of the bytes it handed out in the same pass, which
is what the run manifest records. No plugin re-implements any of this. A destination that
stores into a local file hands the ``Source`` its file descriptor instead (``copy_into``): the
core copies, through the kernel for big files (``kernel_copy``), with the same checks.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import io
import operator
import os
import stat
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import attrs

from . import kernel_copy
from .errors import SourceError
from .layout import MiB
from .names import escape, printable

#: Sources at least this big are hashed on a thread of their own (``_Hasher``): sha256 costs
#: about 0.7 s per GiB, as much as half of a local copy, and a sequential reader then reads and
#: writes while another core hashes. Smaller files are hashed as they are read: a thread per
#: 16 KiB file would cost more than its hash.
BACKGROUND_HASH_MIN = 4 * MiB
#: Bytes handed out but not hashed yet, at most (plus one read): what the background hasher
#: may lag behind. The reader waits beyond it. The hasher is faster than any reader here, so
#: this only bounds memory, it never slows a copy down.
HASH_QUEUE_BYTES = 16 * MiB
#: Reads smaller than this are handed to the background hasher in batches of about this size:
#: one hand-over (a lock and a wake-up) per 8 KiB read would cost more than hashing it.
HASH_BATCH = MiB
#: ``Source.copy_into`` without the kernel: bytes per read and write.
COPY_PIECE = MiB
#: ``Source.copy_into`` copies a file below this size with one ``pread`` (of one byte more:
#: the growth check), one ``fstat`` and one ``write``, hashed in one call (``_copy_small``);
#: from it on, the kernel copies.
SMALL_COPY = kernel_copy.KERNEL_COPY_MIN


def _fspath(path: str | os.PathLike[str]) -> str:
    return os.fspath(path)


@attrs.frozen
class SourceFile:
    """A regular file to upload: where it is, its key below the run prefix, its size when seen.

    ``mtime_ns`` is the modification time when listed: a file touched after that is one that
    changed during the run, even if its size did not. ``relative`` is the stored form of the
    path (``service_backup.names``): a path whose bytes are not UTF-8 is escaped, and
    ``escaped`` says so, which the manifest records for ``restore``.

    The path is kept as the string ``location`` (given as ``path=``, a ``Path`` or a str);
    ``path`` makes a ``Path`` of it when asked. A run lists every file once and opens it by
    that string: a ``Path`` per file, parsed and formatted back, cost as much CPU as the
    ``open``, ``read`` and ``fstat`` of a 4 KiB file.
    """

    location: str = attrs.field(alias="path", converter=str)
    relative: str
    size: int
    mtime_ns: int | None = None
    escaped: bool = False

    @property
    def path(self) -> Path:
        return Path(self.location)

    @property
    def display(self) -> str:
        """The source path fit for a log line or an error message (escaped if not UTF-8)."""
        return printable(self.location)


class _Hasher:
    """sha256 on a thread of its own, fed in order with bytes that were handed out.

    Only ``bytes`` (immutable) are queued, so what is hashed later is exactly what the reader
    got. ``hashlib`` releases the GIL while it hashes a large buffer, so the thread really runs
    beside the reader. The thread starts on the first batch and ends once its queue is empty
    and ``stop`` was called (all bytes hashed, the Source closed or collected); a later batch
    (a Source read again after ``close``) starts a new one, and the hash state carries on.
    """

    def __init__(self, sha: Any) -> None:
        self._sha = sha
        self._queue: collections.deque[list[bytes | memoryview]] = collections.deque()
        self._queued = 0
        self._changed = threading.Condition(threading.Lock())
        self._running = False
        self._stopping = False
        self.error: BaseException | None = None

    def put(self, batch: list[bytes | memoryview], length: int) -> None:
        with self._changed:
            self._stopping = False
            while self._queued and self._queued + length > HASH_QUEUE_BYTES:
                self._changed.wait()
            self._queue.append(batch)
            self._queued += length
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="source-sha256", daemon=True).start()
            else:
                self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if not self._queue:
                    self._running = False
                    self._changed.notify_all()
                    return
                batch = self._queue[0]
            length = 0
            try:
                for data in batch:
                    self._sha.update(data)
                    length += len(data)
            except BaseException as exc:  # MemoryError: fail ``wait``, never hang a reader
                with self._changed:
                    self.error = exc
                    self._queue.clear()
                    self._queued = 0
                    self._running = False
                    self._changed.notify_all()
                return
            with self._changed:
                self._queue.popleft()
                self._queued -= length
                self._changed.notify_all()

    def wait(self) -> None:
        """Until every batch handed over is hashed."""
        with self._changed:
            while self._queue:
                self._changed.wait()
        if self.error is not None:
            raise RuntimeError(f"hashing failed: {self.error!r}")

    def stop(self) -> None:
        """Let the thread end once its queue is empty (it starts again on the next batch)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()


class _Digest:
    """sha256 over bytes that may arrive out of order (offset readers), fed exactly once.

    Bytes at or below the frontier are ignored (a re-read after a rewind); bytes beyond it
    wait until the gap before them is filled. A plugin reading by offset keeps at most its own
    in-flight window here, which it holds in memory anyway (the very same ``bytes``: nothing
    is copied). ``done``, the frontier, moves as bytes are handed out; the hashing itself is
    done under the lock for small sources, by a ``_Hasher`` thread for big ones, and
    ``hexdigest`` waits for it.
    """

    def __init__(self, size: int, *, background: bool) -> None:
        self.size = size
        self.done = 0
        self._sha = hashlib.sha256()
        self._pending: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._hasher = _Hasher(self._sha) if background else None
        self._batch: list[bytes | memoryview] = []
        self._batched = 0
        self._settled: str | None = None

    def feed(self, offset: int, data: bytes) -> int:
        with self._lock:
            end = offset + len(data)
            if end <= self.done:
                return self.done
            if offset > self.done:
                self._pending[offset] = data
                return self.done
            self._hash(data if offset == self.done else memoryview(data)[self.done - offset :])
            self.done = end
            while self._pending:
                later = [o for o in self._pending if o <= self.done]
                if not later:
                    break
                for o in sorted(later):
                    chunk = self._pending.pop(o)
                    if o + len(chunk) > self.done:
                        self._hash(memoryview(chunk)[self.done - o :])
                        self.done = o + len(chunk)
            if self._hasher is not None and (
                self._batched >= HASH_BATCH or (self._batch and self.done >= self.size)
            ):
                self._flush()
                if self.done >= self.size:
                    self._hasher.stop()
            return self.done

    def _hash(self, data: bytes | memoryview) -> None:
        if self._hasher is None:
            self._sha.update(data)
        else:
            self._batch.append(data)
            self._batched += len(data)

    def _flush(self) -> None:
        assert self._hasher is not None
        batch, self._batch = self._batch, []
        length, self._batched = self._batched, 0
        self._hasher.put(batch, length)

    def settle(self, hexdigest: str) -> None:
        """Every byte is accounted for by a copy that hashed them itself (``copy_into``)."""
        with self._lock:
            self.done = self.size
            self._pending.clear()
            self._batch, self._batched = [], 0
            self._settled = hexdigest
        self.stop()

    def hexdigest(self) -> str:
        if self._settled is not None:
            return self._settled
        if self._hasher is not None:
            with self._lock:
                if self._batch:
                    self._flush()
            self._hasher.wait()
        return self._sha.hexdigest()

    def stop(self) -> None:
        """The Source is closed (or gone): the hasher thread may end once it caught up."""
        if self._hasher is not None:
            self._hasher.stop()


class Source:
    """One source file as one destination reads it (a fresh ``Source`` per destination).

    Read it one of three ways: ``open()`` (a sequential, exact-length stream), ``read_all()``
    (small files, one call), or ``read_at()`` (by offset, from several threads) — or have it
    copied into a local file with ``copy_into(fd)``. Each raises
    ``SourceError`` naming the file when it is shorter than ``size``, longer, or modified since
    it was listed, and it does so *before* handing out the last bytes, so a plugin that only
    commits after its final read never commits a wrong object. ``sha256`` is the hash of the
    ``size`` bytes handed out, available once all of them were read.
    """

    def __init__(
        self,
        name: str | None,
        size: int,
        *,
        path: str | os.PathLike[str] | None = None,
        data: bytes | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        #: None: the path, made printable (``names.printable``) when first asked for.
        self._name = name
        self.size = size
        #: The path as a string, what ``os.open`` takes; ``path`` is the ``Path`` of it.
        self._location = path if type(path) is str or path is None else _fspath(path)
        self._path = path if isinstance(path, Path) else None
        self._data = data
        self._mtime_ns = mtime_ns
        #: Made on the first read (``_digest``): a small file copied by ``_copy_small`` never
        #: needs one, its hash is ``_hex`` at once.
        self._digest_made: _Digest | None = None
        self._hex: str | None = None
        if size >= BACKGROUND_HASH_MIN:
            self._digest_made = _Digest(size, background=True)
            # A Source dropped half-read without ``close`` still lets its hasher thread end.
            weakref.finalize(self, self._digest_made.stop)
        self._checked = False
        #: The read ending at ``size`` found no byte beyond it (``_pread``).
        self._ended_at_size = False
        self._fd: int | None = None
        #: Guards ``_fd`` and ``_reported`` (never held while waiting for the other).
        self._lock = threading.Lock()
        #: Called with each count of bytes newly handed out (re-reads after a rewind are not
        #: counted again): what a progress display shows. Set it before the first read.
        self.on_read: Callable[[int], None] | None = None
        self._reported = 0

    @property
    def name(self) -> str:
        """The file as an error message names it (escaped when its path is not UTF-8)."""
        name = self._name
        if name is None:
            name = self._name = printable(self._location or "")
        return name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def _digest(self) -> _Digest:
        digest = self._digest_made
        if digest is None:
            digest = self._digest_made = _Digest(self.size, background=False)
        return digest

    @property
    def path(self) -> Path | None:
        """The file's path (None in memory), for plugins that open it themselves."""
        if self._path is None and self._location is not None:
            self._path = Path(self._location)
        return self._path

    @classmethod
    def from_file(cls, file: SourceFile) -> Source:
        # The name (``file.display``) is made only if an error message needs it.
        return cls(None, file.size, path=file.location, mtime_ns=file.mtime_ns)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<memory>") -> Source:
        """An in-memory source: ``check``, the conformance suite and tests write these."""
        data = data if type(data) is bytes else bytes(data)  # hashed after it was handed out
        return cls(name, len(data), data=data)

    # ------------------------------------------------------------------ reading
    def open(self) -> SourceStream:
        """A sequential reader of exactly ``size`` bytes; close it (or use ``with``)."""
        return SourceStream(self)

    def read_all(self) -> bytes:
        """The whole file in one call, for small files."""
        return self.read_at(0, self.size)

    def read_at(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (within ``size``); safe from several threads."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} outside {self.name} ({self.size} bytes)")
        if self._data is not None:
            data = self._data[offset : offset + length]
        else:
            data = self._pread(offset, length)
        if len(data) != length:
            raise SourceError(
                f"source file {self.name} ended early: {offset + len(data)} bytes, "
                f"{self.size} when listed"
            )
        self._account(offset, data)
        return data

    def copy_into(self, fd: int) -> int:
        """Copy the whole file into ``fd``, a new empty regular file; the bytes written.

        For destinations that store into a local file (``local``): the core reads the source
        here, so the checks and the hash are the same as for any other way of reading. A file
        of at least ``kernel_copy.KERNEL_COPY_MIN`` bytes is copied by the kernel
        (``copy_file_range``) when ``fd`` is open for reading and writing, and ``sha256`` is
        then that of the bytes as written to ``fd``, read back on a helper thread — exactly
        the stored bytes (``kernel_copy`` says why that is sound). The file being shorter or
        longer than listed, or modified since, raises ``SourceError`` naming it once the copy
        is done and before this returns, so the caller removes ``fd``'s file and never reports
        it stored. Smaller files, in-memory sources, an ``fd`` open for writing only and file
        systems the kernel cannot copy between go through ``read_at`` and ``write`` (hashed
        as handed out). Another failure writing ``fd`` raises ``OSError``.
        """
        if self.size < SMALL_COPY and self._data is None and self._digest_made is None:
            return self._copy_small(fd)
        if (
            self._data is None
            and self.size >= kernel_copy.KERNEL_COPY_MIN
            and _read_write(fd)
            and kernel_copy.available()
        ):
            try:
                copied = kernel_copy.copy_hashing(
                    self._descriptor(), fd, self.size, progress=self._copied()
                )
            except kernel_copy.Unsupported:
                pass
            else:
                if copied.size != self.size:
                    raise SourceError(
                        f"source file {self.name} ended early: {copied.size} bytes, "
                        f"{self.size} when listed"
                    )
                self._final_check()
                self._digest.settle(copied.sha256)
                return copied.size
        return self._copy_reading(fd)

    def _copied(self) -> Callable[[int], None] | None:
        """``on_read``'s view of a kernel copy: each piece copied counts as handed out."""
        on_read = self.on_read
        if on_read is None:
            return None
        position = 0

        def copied(n: int) -> None:
            nonlocal position
            position += n
            with self._lock:
                delta, self._reported = position - self._reported, max(position, self._reported)
            if delta > 0:
                on_read(delta)

        return copied

    def _copy_small(self, fd: int) -> int:
        """``copy_into`` for a small file not read before: four system calls and one hash.

        One ``pread`` asks for a byte more than ``size`` (found: the file grew), then ``fstat``
        compares size and mtime with the listing, all *before* a byte is written to ``fd``: the
        checks of ``read_at`` and ``_final_check``, in the order that lets nothing of a changed
        file reach the destination. The sha256 is of exactly the bytes then written.
        """
        size = self.size
        source = self._fd
        if source is None:  # not yet open (the usual case): no other thread reads it yet
            source = self._fd = self._open()
        try:
            data = os.pread(source, size + 1, 0)
            got = len(data)
            if 0 < got < size:  # a short read before the end (rare): read on to be sure
                chunks = [data]
                while got <= size:
                    more = os.pread(source, size + 1 - got, got)
                    if not more:
                        break
                    chunks.append(more)
                    got += len(more)
                data = b"".join(chunks)
            st = os.fstat(source)
        except OSError as exc:
            raise SourceError(
                f"cannot read source file {self.name}: {exc.strerror or exc}"
            ) from None
        if got > size or st.st_size > size:
            self._size_changed(max(got, st.st_size))
        if got < size or st.st_size < size:
            raise SourceError(
                f"source file {self.name} ended early: {min(got, st.st_size)} bytes, "
                f"{size} when listed"
            )
        if self._mtime_ns is not None and st.st_mtime_ns != self._mtime_ns:
            raise SourceError(f"source file {self.name} was modified during the run")
        self._checked = True
        self._hex = hashlib.sha256(data).hexdigest()
        written = os.write(fd, data)
        if written < size:  # a short write (a full disk reports itself on the next one)
            view = memoryview(data)[written:]
            while view:
                n = os.write(fd, view)
                written += n
                view = view[n:]
        if self.on_read is not None and size:
            self._reported = size
            self.on_read(size)
        return written

    def _copy_reading(self, fd: int) -> int:
        """``copy_into`` through ``read_at`` and ``write``, in ``COPY_PIECE`` pieces.

        A small file is one ``read_at`` and, nearly always, one ``write``.
        """
        size = self.size
        if size == 0:
            self.read_at(0, 0)  # still checks the file did not grow or change
            return 0
        offset = written = 0
        while offset < size:
            data = self.read_at(offset, min(COPY_PIECE, size - offset))
            n = os.write(fd, data)
            written += n
            if n < len(data):  # a short write (a full disk reports itself on the next one)
                view = memoryview(data)[n:]
                while view:
                    n = os.write(fd, view)
                    written += n
                    view = view[n:]
            offset += len(data)
        return written

    @property
    def sha256(self) -> str:
        """Lowercase hex sha256 of the bytes handed out; SourceError if not all were read.

        For a big source it waits for the hasher thread, at most a few MiB behind the reader.
        """
        if self._hex is not None:
            return self._hex
        if self._digest.done < self.size:
            raise SourceError(
                f"source file {self.name}: only {self._digest.done} of {self.size} bytes "
                "were read by the destination"
            )
        self._final_check()
        return self._digest.hexdigest()

    def close(self) -> None:
        """Close the file; reading again opens it again, and the hash carries on from there."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if self._digest_made is not None:
            self._digest_made.stop()

    # ------------------------------------------------------------------ internals
    def _account(self, offset: int, data: bytes) -> None:
        done = self._digest.feed(offset, data)
        if self.on_read is not None:
            with self._lock:
                delta, self._reported = done - self._reported, max(done, self._reported)
            if delta > 0:
                self.on_read(delta)
        if done >= self.size:
            self._final_check()

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = self._open()
            return self._fd

    def _open(self) -> int:
        assert self._location is not None
        try:
            return os.open(self._location, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceError(f"source file {self.name} vanished during the run") from None
        except OSError as exc:
            raise SourceError(
                f"cannot read source file {self.name}: {exc.strerror or exc}"
            ) from None

    def _pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; the read that ends at ``size`` asks for one more.

        That extra byte is the growth check of ``_final_check`` folded into the last read (one
        system call fewer per file): found, the file grew, and ``SourceError`` is raised before
        the last bytes are handed out; not found, the file ended exactly at ``size`` then.
        """
        fd = self._descriptor()
        tail = offset + length == self.size
        want = length + 1 if tail else length
        chunks: list[bytes] = []
        got = 0
        try:
            while got < length:
                chunk = os.pread(fd, want - got, offset + got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except OSError as exc:
            raise SourceError(
                f"cannot read source file {self.name}: {exc.strerror or exc}"
            ) from None
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if tail and got > length:
            self._size_changed(offset + got)
        if tail and got == length and length:
            # The last read asked for a byte past ``size`` and came back short: a regular
            # file ended there. (``_final_check``'s ``fstat`` still compares the size.)
            self._ended_at_size = True
        return data

    def _final_check(self) -> None:
        """Once every byte was read: the file must not be longer now, nor modified since listed."""
        if self._checked or self._data is not None:
            self._checked = True
            return
        fd = self._descriptor()
        try:
            extra = b"" if self._ended_at_size else os.pread(fd, 1, self.size)
            st = os.fstat(fd)
        except OSError as exc:
            raise SourceError(
                f"cannot read source file {self.name}: {exc.strerror or exc}"
            ) from None
        if extra or st.st_size != self.size:
            self._size_changed(max(st.st_size, self.size + len(extra)))
        if self._mtime_ns is not None and st.st_mtime_ns != self._mtime_ns:
            raise SourceError(f"source file {self.name} was modified during the run")
        self._checked = True

    def _size_changed(self, now: int) -> NoReturn:
        raise SourceError(
            f"source file {self.name} changed size during the run "
            f"({self.size} bytes when listed, {now} now)"
        )


class SourceStream(io.RawIOBase):
    """``Source.open()``: a file-like object of exactly ``size`` bytes.

    Seekable, so SDKs that rewind to retry a request work; bytes read again after a rewind are
    hashed only once. Reading past ``size`` returns b"" (after checking the file did not grow).
    """

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self._position = 0
        if source.size == 0:
            source._final_check()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.source.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        length = min(len(view), self.source.size - self._position)
        if length <= 0:
            self.source._final_check()
            return 0
        data = self.source.read_at(self._position, length)
        view[:length] = data
        self._position += length
        return length

    def read(self, size: int | None = -1) -> bytes:
        remaining = self.source.size - self._position
        length = remaining if size is None or size < 0 else min(size, remaining)
        if length <= 0:
            self.source._final_check()
            return b""
        data = self.source.read_at(self._position, length)
        self._position += length
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            self.source.close()
        super().close()


def _read_write(fd: int) -> bool:
    """Whether ``fd`` is open for reading too: a kernel copy reads its bytes back to hash."""
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
    except OSError:
        return False


_RELATIVE = operator.attrgetter("relative")
S_ISREG, S_ISDIR, S_ISLNK = stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK
_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def scan_source(folder: str | Path, log: Any = None) -> list[SourceFile]:
    """Every regular file under ``folder``, sorted by relative path.

    The walk is iterative (a tree 1,100 folders deep is a tree like any other, not a
    RecursionError). Symlinks to files inside ``folder`` are followed (their content is what
    the operator means to keep); a symlink that resolves *outside* it is not (a link to
    ``/etc/shadow`` must not end up at every destination); symlinked folders are not
    descended (no loops). Everything skipped is logged with its reason: dangling links,
    FIFOs, sockets, devices. An empty folder is logged too: a prepare command that produced
    nothing is usually a bug. A folder that cannot be listed fails the run with its name
    rather than silently shrinking the backup. A path whose bytes are not UTF-8 gets its
    %XX-escaped key (``service_backup.names``) here, once, so no destination sees raw bytes.
    """
    from loguru import logger

    log = log or logger
    root = Path(folder)
    try:
        if not root.is_dir():
            raise SourceError(f"source_folder {root} does not exist or is not a directory")
    except PermissionError:
        raise SourceError(f"source_folder {root} cannot be read: permission denied") from None
    real_root = os.path.realpath(root)

    def skipped(message: str, path: Path, reason: str, **data: Any) -> None:
        data = {k: printable(v) if isinstance(v, str) else v for k, v in data.items()}
        log.bind(path=printable(str(path)), reason=reason, **data).warning(message)

    found: list[SourceFile] = []
    # Paths as strings below ``root``: pathlib's parsing, ``relative_to`` and ``as_posix``
    # per file cost more than listing and stat-ing it (20,000 files: ~0.5 s of 2 s).
    top = str(root)
    cut = len(top) if top.endswith("/") else len(top) + 1
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except FileNotFoundError:
            if directory == top:
                raise SourceError(f"source_folder {root} vanished during the run") from None
            continue  # removed while the run listed it: not part of this backup
        except OSError as exc:
            where = printable(directory)
            raise SourceError(f"cannot list {where}: {exc.strerror or exc}") from None
        for entry in entries:
            name = entry.path
            try:
                # One ``lstat`` answers what the entry is and, for a file (the usual case),
                # its size and mtime: no ``is_symlink``/``is_dir`` calls per file.
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                if S_ISREG(mode):
                    relative, escaped = name[cut:], False
                    if not relative.isascii():  # ASCII has no byte that is not UTF-8
                        relative, escaped = escape(relative)
                    found.append(SourceFile(name, relative, st.st_size, st.st_mtime_ns, escaped))
                elif S_ISDIR(mode):
                    stack.append(name)
                elif S_ISLNK(mode):
                    file = _through_link(Path(name), root, real_root, skipped)
                    if file is not None:
                        found.append(file)
                else:
                    kind = _KINDS.get(stat.S_IFMT(mode), "special file")
                    skipped("Skipped a source file that is not a regular file", Path(name), kind)
            except FileNotFoundError:
                continue  # vanished between listing and stat: not part of this backup
            except OSError as exc:
                raise SourceError(
                    f"cannot read source file {printable(name)}: {exc.strerror}"
                ) from None
    if not found:
        log.bind(source_folder=str(root)).warning(
            "source_folder is empty: nothing to back up (did the prepare command produce nothing?)"
        )
    found.sort(key=_RELATIVE)
    _refuse_clashes(found)
    return found


def _refuse_clashes(found: list[SourceFile]) -> None:
    """Fail when an escaped path lands on the key of another file (or on one of its folders).

    ``caf\\xe9.txt`` is stored as ``caf%E9.txt``; a file literally named ``caf%E9.txt`` beside
    it would be overwritten at every destination. Only escaped paths can clash, and only in
    such a contrived tree: the run fails naming both rather than silently keeping one.
    """
    if not any(f.escaped for f in found):
        return
    folders: dict[str, SourceFile] = {}
    for file in found:
        parts = file.relative.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), file)
    for index, file in enumerate(found):  # sorted by key: equal keys are neighbours
        same = found[index - 1] if index and found[index - 1].relative == file.relative else None
        other = same or folders.get(file.relative)
        if other is not None:
            clash = "as" if same else "as a file and as a folder:"
            raise SourceError(
                f"source files {other.display} and {file.display} would both be stored {clash} "
                f"{file.relative} (names that are not UTF-8 are stored %XX-escaped): rename one"
            )


def _through_link(path: Path, root: Path, real_root: str, skipped: Any) -> SourceFile | None:
    """The file a symlink names, when it is a regular file inside the source folder."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    resolved = os.path.realpath(path)
    if os.path.commonpath([real_root, resolved]) != real_root:
        skipped(
            "Skipped a symbolic link that points outside source_folder",
            path,
            "resolves outside source_folder",
            target=target,
            resolved=resolved,
        )
        return None
    try:
        st = os.stat(resolved)
    except FileNotFoundError:
        skipped("Skipped a dangling symbolic link", path, "target missing", target=target)
        return None
    if stat.S_ISDIR(st.st_mode):
        skipped(
            "Skipped a symbolic link to a folder", path, "folders are not followed", target=target
        )
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        skipped("Skipped a source file that is not a regular file", path, kind, target=target)
        return None
    # The resolved path is what gets read: swapping the link later cannot redirect the read.
    relative, escaped = escape(path.relative_to(root).as_posix())
    return SourceFile(
        path=Path(resolved),
        relative=relative,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        escaped=escaped,
    )
