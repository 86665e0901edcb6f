"""File to file copies done by the kernel, hashed from the bytes as they landed.

Copying a big file from one local file to another through Python costs two copies per byte
into and out of user space (``pread`` + ``write``) on top of the sha256 the run manifest needs.
``copy_file_range(2)`` moves the bytes inside the kernel (page cache to page cache, or shared
extents on file systems that can reflink), so only the hash is left in user space. The upload
to a local destination (``Source.copy_into``) copies this way; this module is the one place
that does it. (``restore`` does not: reading the bytes back put the read-back on the hash's
thread, its critical path; it reads, writes and hashes the very buffers written instead.)

What is hashed: the *destination's* bytes, read back (``pread``, from the page cache they were
just written into) on a helper thread while the kernel copies the next chunk. That is what a
run manifest must describe — the bytes stored — rather than bytes read from the source, which
the kernel copy never hands to user space. Why that is sound:

- The destination is a file this process has just created (``O_EXCL``) and nobody else writes:
  the range hashed is the range the kernel wrote, byte for byte.
- A source that changes during the copy may leave a torn mixture in the destination — exactly
  as a ``read`` of a file being written may — and the hash then describes that mixture
  faithfully. Catching the change is the caller's job, as it is for a read: ``Source`` compares
  size and mtime with the listing once the copy is done, *before* reporting it complete, and
  the file is removed.
- On a file system that shares extents instead of copying (XFS, Btrfs: a reflink), the
  destination's pages are not in the page cache and the hash reads them from disk: slower
  than hashing the cached source, but still the stored bytes, which is the point.
- A source shorter than asked ends the copy early: the result says how many bytes came over and
  the caller decides (a source that shrank, a stored object of the wrong size).

``copy_file_range`` is not available everywhere: older kernels refuse copies across file
systems (``EXDEV``), some file systems do not implement it (``EOPNOTSUPP``, ``EINVAL``), other
platforms lack it (``ENOSYS`` or no ``os.copy_file_range``), and a few pseudo or network file
systems report 0 bytes for a file that has data. When the very first call says so, nothing has
been written and ``Unsupported`` lets the caller take its ordinary read/write path. Should the
kernel refuse after some bytes went over (not seen in practice), the rest is copied with
``pread``/``pwrite`` here, hashed the same way.

The callers make what they copied durable once, at the end (``syncfs``, like ``cp`` +
``sync``). So that this flush does not start from a full gigabyte of dirty pages, each chunk's
write-back to disk is started as soon as it is copied (``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE``: start the I/O, wait for nothing), while the hash is still reading
it. This changes nothing about durability — only the final flush promises that — and moves
the disk writes under the hashing: on a 1 GiB copy the final ``syncfs`` took 0.05 s instead of
0.45 s, for about 0.1 s more system time (the I/O is submitted by this process rather than by
the kernel's flusher).

Memory stays bounded: the helper reads back through one reused buffer, and the copy waits when
it is more than ``HASH_LAG`` bytes ahead of the hash (which also keeps the bytes read back in
the page cache).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable

import attrs

from .file_sync import start_writeback
from .layout import MiB

#: Below this size a copy is a read and a write of one piece: a kernel copy plus reading the
#: bytes back costs as many system calls and saves nothing worth having.
KERNEL_COPY_MIN = 256 * 1024
#: Bytes per ``copy_file_range`` call: the copy's progress (and a stop request) is seen at
#: this interval. Bigger pieces saved no measurable time.
CHUNK = 8 * MiB
#: Bytes read back per ``pread`` to hash: small enough to be hashed from the CPU cache right
#: after the read copied it there (1 GiB read back from the page cache: 0.13 s of system time
#: in 64 KiB pieces, 0.20 s in 256 KiB or 1 MiB ones).
HASH_PIECE = 64 * 1024
#: The copy waits when it is this far ahead of the hash.
HASH_LAG = 64 * MiB
#: Copies at least this big are hashed on a helper thread beside the copy; smaller ones after
#: each chunk, in the calling thread (a thread costs more than hashing a few MiB).
BACKGROUND_HASH_MIN = 4 * MiB

#: What ``copy_file_range`` says when it cannot copy between these two files at all.
UNSUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


class Unsupported(Exception):
    """The kernel cannot copy between these two files; nothing was written."""


@attrs.frozen
class Copied:
    """``size`` bytes went over (fewer than asked: the source ended); ``sha256`` is theirs."""

    size: int
    sha256: str


def available() -> bool:
    return hasattr(os, "copy_file_range")


def copy_hashing(
    src: int,
    dst: int,
    length: int,
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int | None = None,
) -> Copied:
    """Copy ``length`` bytes from offset 0 of ``src`` to offset 0 of ``dst`` and hash them.

    ``dst`` must be a new, empty regular file opened for reading *and* writing (the hash is of
    its bytes, read back). File positions are neither used nor moved. ``progress`` hears of
    each piece copied (its length) and may raise to stop the copy (a shutdown); the exception
    propagates and the caller removes ``dst``. Raises ``Unsupported`` before writing anything
    when the kernel cannot copy these files, ``OSError`` for any other failure.
    """
    if not available():
        raise Unsupported("copy_file_range is not available")
    chunk = chunk or CHUNK
    hasher = _RangeHasher(dst, background=length >= BACKGROUND_HASH_MIN)
    done = 0
    try:
        while done < length:
            want = min(chunk, length - done)
            try:
                n = os.copy_file_range(src, dst, want, done, done)
            except OSError as exc:
                if exc.errno not in UNSUPPORTED:
                    raise
                if done == 0:
                    raise Unsupported(exc.strerror or str(exc)) from None
                n = _copy_user(src, dst, want, done)
            if n == 0 and _has_byte(src, done):
                # Some file systems answer 0 for a file that has data: not the end.
                if done == 0:
                    raise Unsupported("copy_file_range copied nothing from a file with data")
                n = _copy_user(src, dst, want, done)
            if n == 0:
                break  # the source ended
            start_writeback(dst, done, n)
            done += n
            hasher.advance(done)
            if progress is not None:
                progress(n)
        return Copied(done, hasher.finish())
    finally:
        hasher.close()


def _has_byte(fd: int, offset: int) -> bool:
    return bool(os.pread(fd, 1, offset))


def _copy_user(src: int, dst: int, length: int, offset: int) -> int:
    """Up to ``length`` bytes at ``offset`` through user space; the bytes copied."""
    data = os.pread(src, length, offset)
    view = memoryview(data)
    position = offset
    while view:
        n = os.pwrite(dst, view, position)
        view = view[n:]
        position += n
    return len(data)


class _RangeHasher:
    """sha256 of ``fd``'s bytes from offset 0 up to a limit that ``advance`` moves forward.

    In the background (a thread of its own, which ``hashlib`` and ``preadv`` let run beside
    the copy since both release the GIL) or inline in ``advance``. Either way one reused
    buffer: no allocation per piece.
    """

    def __init__(self, fd: int, *, background: bool) -> None:
        self._fd = fd
        self._sha = hashlib.sha256()
        self._buffer = bytearray(HASH_PIECE)
        self._hashed = 0
        self._limit = 0
        self._closing = False
        self._error: BaseException | None = None
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="copy-sha256", daemon=True)
            self._thread.start()

    def advance(self, limit: int) -> None:
        """Bytes up to ``limit`` are written; hash them (or let the thread), keeping up."""
        if self._thread is None:
            self._hash_to(limit)
            return
        with self._changed:
            self._limit = limit
            self._changed.notify_all()
            while self._error is None and limit - self._hashed > HASH_LAG:
                self._changed.wait()
            if self._error is not None:
                raise self._error

    def finish(self) -> str:
        """The hex digest once every byte up to the last limit is hashed."""
        if self._thread is not None:
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            self._thread.join()
            self._thread = None
            if self._error is not None:
                raise self._error
        return self._sha.hexdigest()

    def close(self) -> None:
        """Stop the thread (after a failure: what is left unhashed does not matter)."""
        if self._thread is not None:
            with self._changed:
                self._closing = True
                self._limit = self._hashed
                self._changed.notify_all()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._hashed >= self._limit and not self._closing:
                    self._changed.wait()
                limit = self._limit
                if self._hashed >= limit:
                    return
            try:
                self._hash_to(limit)
            except BaseException as exc:  # reported to the copy, never a hung copy
                with self._changed:
                    self._error = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self._changed.notify_all()

    def _hash_to(self, limit: int) -> None:
        buffer, view = self._buffer, memoryview(self._buffer)
        while self._hashed < limit:
            want = min(len(buffer), limit - self._hashed)
            n = os.preadv(self._fd, [view[:want]], self._hashed)
            if n <= 0:
                raise OSError(errno.EIO, "the copied file is shorter than what was written")
            self._sha.update(view[:n])
            self._hashed += n
