"""What s3transfer reads from: the source stream, counted, and by offset when it is a file.

Given a file *object*, s3transfer copies every part into memory before sending it (it cannot
share one file position between threads). Given a file *name*, it reads each part lazily
from its own handle while sending, so memory stays at a few socket buffers. A backup source
is an open regular file, so ``SourceFiles`` (s3transfer's ``osutil`` hook) hands out a name
that stands for it and opens that name as a positional reader (``os.pread``) over the same
open file: no copy, no second ``open`` by path (the file read is the one the core opened and
will check). Streams without a file descriptor take s3transfer's bounded in-memory path
through ``SizedReader``.

Both present exactly the size the run listed, fail (before the upload is completed) when the
source ends early, and keep what ``write`` reports: how many bytes were read from the source,
and the ``OSError`` if reading it failed, which ``write`` turns into the core's
``SourceError`` so that the file is blamed rather than S3.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import stat
import threading
from collections.abc import Iterator
from typing import IO

from s3transfer.utils import OSUtils

from service_backup.errors import SourceError


class SourceShrank(OSError):
    """The source ended before the size the run listed: it changed during the run."""

    def __init__(self, got: int, expected: int) -> None:
        super().__init__(
            errno.ENODATA, f"ended after {got} of {expected} bytes (it changed during the run)"
        )


class SizedReader:
    """Exactly ``size`` bytes of a stream, as s3transfer's in-memory path and PutObject see it.

    s3transfer trusts short reads (it would complete a multipart upload from a truncated part),
    so a stream that ends early raises ``SourceShrank`` here, before anything is completed.
    """

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self.size = size
        self.start = stream.tell() if self.seekable() else 0
        self._pos = 0
        #: Highest offset read so far: once the upload succeeded, the bytes stored.
        self.bytes_read = 0
        self.read_error: OSError | None = None

    def read(self, size: int | None = -1) -> bytes:
        remaining = self.size - self._pos
        want = remaining if size is None or size < 0 else min(size, remaining)
        chunks, got = [], 0
        try:
            while got < want:
                data = self._stream.read(want - got)
                if not data:
                    raise SourceShrank(self._pos + got, self.size)
                chunks.append(data)
                got += len(data)
        except OSError as exc:
            self.read_error = exc
            raise
        self._pos += got
        self.bytes_read = max(self.bytes_read, self._pos)
        return b"".join(chunks)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        try:
            return bool(self._stream.seekable())
        except (AttributeError, OSError, ValueError):
            return False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = min(self.size, max(0, base + offset))
        self._stream.seek(self.start + self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos


def source_error(stream: IO[bytes], exc: OSError) -> SourceError:
    """The core's SourceError for a failure reading the source, naming the file if known.

    The core hands destinations its own reader, which names the file (``.file.path``);
    a plain file object has ``.name``.
    """
    path = getattr(getattr(stream, "file", None), "path", None) or getattr(stream, "name", None)
    what = f"source file {path}" if isinstance(path, str | os.PathLike) else "the source stream"
    if isinstance(exc, SourceShrank):
        return SourceError(f"{what} {exc.strerror}")
    return SourceError(f"cannot read {what}: {exc.strerror or exc}")


def file_descriptor(stream: IO[bytes]) -> int | None:
    """The descriptor of a stream backed by a regular file, else None."""
    try:
        fd = stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


class Source:
    """One open source file shared by the part readers of one upload."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        self.fd = fd
        self.start = start
        self.size = size
        #: Highest offset any part reader reached (parts are contiguous, retries re-read):
        #: once the upload succeeded, the number of bytes stored.
        self.bytes_read = 0
        self.read_error: OSError | None = None
        self._lock = threading.Lock()

    def pread(self, size: int, offset: int) -> bytes:
        try:
            data = os.pread(self.fd, size, self.start + offset)
            if len(data) < size:  # a regular file reads short only at its end
                raise SourceShrank(offset + len(data), self.size)
        except OSError as exc:
            self.read_error = exc
            raise
        with self._lock:
            self.bytes_read = max(self.bytes_read, offset + len(data))
        return data


class _PartReader:
    """A private position over a ``Source``: what s3transfer gets when it "opens" the name."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._pos = 0

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(0, self._source.size - self._pos)
        size = remaining if size is None or size < 0 else min(size, remaining)
        data = self._source.pread(size, self._pos) if size else b""
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        pass  # the core owns and closes the file


class SourceFiles(OSUtils):
    """s3transfer's file access, with names that stand for registered open sources."""

    def __init__(self) -> None:
        self._sources: dict[str, Source] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @contextlib.contextmanager
    def register(self, fd: int, start: int, size: int) -> Iterator[tuple[str, Source]]:
        source = Source(fd, start, size)
        name = f"<service-backup source {next(self._ids)}>"
        with self._lock:
            self._sources[name] = source
        try:
            yield name, source
        finally:
            with self._lock:
                del self._sources[name]

    def _source(self, filename: str) -> Source:
        with self._lock:
            return self._sources[filename]

    def get_file_size(self, filename: str) -> int:
        return self._source(filename).size

    def open(self, filename: str, mode: str) -> _PartReader:  # type: ignore[override]
        return _PartReader(self._source(filename))
