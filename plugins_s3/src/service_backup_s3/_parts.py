"""How s3transfer reads a core ``Source``: a name standing for it, and range readers over it.

Given a file *object*, s3transfer copies every part into memory before sending it (it cannot
share one position between threads). Given a file *name*, it opens the name once per part
and reads that part while sending it, so memory stays at a few socket buffers per part.
``SourceNames`` is s3transfer's ``osutil`` hook: ``register`` hands out a name standing for a
``Source``, and "opening" that name gives a reader of byte ranges through ``Source.read_at``.
Every byte thus goes through the core's ``Source`` (which checks the file and hashes it in the
same pass); nothing here opens the file by path.

Parts are sent in parallel, but each part is first read whole by ``part_md5`` (its
``Content-MD5``, which S3 verifies) before its request is built, and ``ReadAhead`` makes those
first reads go in file order: a read that starts past the first unread byte waits until it
ends within ``window`` bytes of it. The ``Source`` then hashes as it reads instead of holding
out-of-order parts in memory (its out-of-order window is at most ``window``), and the lowest
unfinished part never waits, so the upload always progresses. Sending re-reads the part (from
the page cache), in parallel with the other parts, as do botocore's own checksum and signature
passes over HTTP; the ``Source`` hashes bytes it handed out before only once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from s3transfer.utils import OSUtils

from service_backup.errors import DestinationError
from service_backup.source import Source

#: Largest read handed out at once (a shorter read is what file objects may return, and every
#: reader in botocore and s3transfer loops until it has what it asked for): botocore asks for
#: 1 MiB at a time, and eight threads holding 1 MiB buffers cost RSS for no speed.
CHUNK = 256 * 1024


_MD5_KEY = "service_backup_part_md5"
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


class ReadAhead:
    """How far reads of one ``Source`` may run ahead of its first unread byte."""

    def __init__(self, window: int) -> None:
        self.window = window
        #: The first byte not read yet (every byte below it was read at least once).
        self.frontier = 0
        self._ahead: dict[int, int] = {}  # start -> end of ranges read beyond the frontier
        self._changed = threading.Condition()
        #: True once the transfer failed: waiting readers give up instead of waiting forever.
        self.failed: Callable[[], bool] = lambda: False

    def wait(self, offset: int, length: int) -> None:
        with self._changed:
            while offset > self.frontier and offset + length > self.frontier + self.window:
                if self.failed():
                    raise OSError("the transfer failed while this part waited to be read")
                self._changed.wait(0.25)

    def done(self, offset: int, length: int) -> None:
        with self._changed:
            end = offset + length
            if end <= self.frontier:
                return
            if offset > self.frontier:
                self._ahead[offset] = max(end, self._ahead.get(offset, 0))
                return
            self.frontier = end
            while True:
                reached = [start for start in self._ahead if start <= self.frontier]
                if not reached:
                    break
                for start in reached:
                    self.frontier = max(self.frontier, self._ahead.pop(start))
            self._changed.notify_all()


class _RangeReader:
    """A private position over a ``Source``: what s3transfer gets when it opens the name.

    s3transfer seeks it to its part's first byte and reads at most the part's length; botocore
    may rewind it to checksum, sign or retry a part, which the ``Source`` hashes only once.
    """

    def __init__(self, source: Source, ahead: ReadAhead) -> None:
        self._source = source
        self._ahead = ahead
        self._position = 0

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(0, self._source.size - self._position)
        size = remaining if size is None or size < 0 else min(size, remaining)
        size = min(size, CHUNK)
        if size <= 0:
            return b""
        self._ahead.wait(self._position, size)
        data = self._source.read_at(self._position, size)
        self._ahead.done(self._position, size)
        self._position += size
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._source.size}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass  # the core owns the Source and closes it


class SourceNames(OSUtils):
    """s3transfer's file access, where file names stand for registered ``Source`` objects."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._sources: dict[str, tuple[Source, ReadAhead]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @contextlib.contextmanager
    def register(self, source: Source) -> Iterator[tuple[str, ReadAhead]]:
        name = f"<service-backup source {next(self._ids)}>"
        ahead = ReadAhead(self.window)
        with self._lock:
            self._sources[name] = (source, ahead)
        try:
            yield name, ahead
        finally:
            with self._lock:
                del self._sources[name]

    def get_file_size(self, filename: str) -> int:
        with self._lock:
            return self._sources[filename][0].size

    def open(self, filename: str, mode: str) -> _RangeReader:  # type: ignore[override]
        with self._lock:
            return _RangeReader(*self._sources[filename])


def part_md5(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """botocore ``before-parameter-build.s3.UploadPart``: the part's ``Content-MD5``.

    Reads the part once, in order (the first read of its bytes, see above), and rewinds it.
    s3transfer's progress callbacks are paused meanwhile: this is not bytes on the wire.
    """
    body = params.get("Body")
    if body is None or params.get("ContentMD5") or not hasattr(body, "seek"):
        return
    pause = getattr(body, "signal_not_transferring", None)
    if pause is not None:
        pause()
    try:
        start = body.tell()
        md5 = hashlib.md5(usedforsecurity=False)
        while chunk := body.read(1024 * 1024):
            md5.update(chunk)
        body.seek(start)
    finally:
        resume = getattr(body, "signal_transferring", None)
        if resume is not None:
            resume()
    params["ContentMD5"] = base64.b64encode(md5.digest()).decode()
    context[_MD5_KEY] = md5.hexdigest()


class PartChecked:
    """botocore ``after-call.s3.UploadPart``: the ETag the store answers must be the part's MD5.

    A store that verifies ``Content-MD5`` refuses an altered part itself; this catches one that
    does not (moto, some S3-compatible stores), as the single PUT compares its ETag. Skipped
    with SSE-KMS (its ETags are not MD5s) and for ETags that are not plain MD5s.
    """

    def __init__(self, kms: bool) -> None:
        self.kms = kms

    def __call__(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        sent = context.get(_MD5_KEY)
        etag = str(parsed.get("ETag", "")).strip('"').lower()
        if self.kms or not sent or not _PLAIN_MD5.match(etag) or etag == sent:
            return
        raise DestinationError(
            f"integrity check failed: the store reports MD5 {etag} for a part whose data has "
            f"MD5 {sent}"
        )
