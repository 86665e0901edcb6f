"""How s3transfer reads a core ``Source``: a name standing for it, and part readers over it.

Given a file *object*, s3transfer copies every part into memory before sending it (it cannot
share one position between threads). Given a file *name*, it opens the name once per part.
``SourceNames`` is s3transfer's ``osutil`` hook: ``register`` hands out a name standing for a
``Source``, and "opening" that name gives a ``_PartReader`` over it. Every byte thus goes
through the core's ``Source`` (which checks the file and hashes it); nothing here opens the
file by path.

A part is read from the file once, whole, by one ``Source.read_at``, and kept in memory until
it was sent (one part size per part in flight: ``PART_CONCURRENCY`` x 8 MiB). Everything that
needs its bytes then reads that buffer: ``PartIntegrity`` (its ``Content-MD5`` or CRC32C, which
S3 verifies, and the ETag check), botocore's payload signature over plain HTTP or its checksum,
the socket, and a retry. Reading the file by range for each of these passes cost a pread and a
copy per pass, and under ``ReadAhead`` it serialised the parts' MD5s behind one another; now a
part's first and only read is one system call, the checksums of the parts in flight run side by
side (hashlib and google-crc32c release the GIL), and the Source's sha256 runs on its own thread.

``ReadAhead`` makes those reads go roughly in file order: a read that starts past the first
unread byte waits until it ends within ``window`` bytes of it. The Source then hashes as it
reads instead of holding out-of-order parts (at most ``window`` bytes wait there), and the
lowest unread part never waits, so the upload always progresses.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.config import Config as BotoConfig
from s3transfer.utils import ChunksizeAdjuster, OSUtils

from service_backup.errors import DestinationError
from service_backup.source import Source

from ._checksums import Sent

_SENT_KEY = "service_backup_part_sent"


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


class _PartReader:
    """A private position over a ``Source``: what s3transfer gets when it opens the name.

    s3transfer seeks it to its part's first byte and reads at most the part's length. The
    first read loads the whole part (``part_size`` bytes from there, fewer at the end of the
    file) with one ``Source.read_at``; every read after it, including botocore's rewinds to
    sign, checksum or retry the part, is a zero-copy slice of that buffer. A read outside the
    buffer (never done by s3transfer) loads the part size from there. ``close`` (s3transfer
    closes the part's body once its request is done) drops the buffer.
    """

    def __init__(
        self, source: Source, ahead: ReadAhead, part_size: int, reader: Callable[..., Any]
    ) -> None:
        self._source = source
        self._reader = reader
        self._ahead = ahead
        self._part_size = part_size
        self._position = 0
        self._start = 0
        self._part = memoryview(b"")

    def read(self, size: int | None = -1) -> bytes | memoryview:
        remaining = self._source.size - self._position
        size = remaining if size is None or size < 0 else min(size, remaining)
        if size <= 0:
            return b""
        offset = self._position - self._start
        if not 0 <= offset < len(self._part):
            self._load()
            offset = 0
        data = self._part[offset : offset + size]
        self._position += len(data)
        return data

    def _load(self) -> None:
        start = self._position
        length = min(self._part_size, self._source.size - start)
        self._part = memoryview(b"")  # the old part goes before the new one is read
        self._ahead.wait(start, length)
        data = self._reader(self._source.read_at, start, length)
        self._ahead.done(start, length)
        self._start, self._part = start, memoryview(data)

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
        self._part = memoryview(b"")  # the core owns the Source and closes it


class SourceNames(OSUtils):
    """s3transfer's file access, where file names stand for registered ``Source`` objects.

    ``part_size`` is the configured part size; for each file it is adjusted as s3transfer
    adjusts it (files of more than 10,000 parts get bigger ones), so that a part reader
    loads exactly its part. Reads of a file may run ``parts_ahead`` parts ahead of its first
    unread byte (``ReadAhead``).

    Every part is read by one thread of its own, whichever s3transfer thread sends it. The
    part's buffer is then allocated there, in that thread's malloc arena, and freed parts are
    reused by the next reads: with each of s3transfer's threads allocating in its own arena,
    glibc kept up to two freed parts per arena (its trim threshold grows with the biggest
    freed block), and a 1 GiB upload peaked anywhere between 125 and 170 MiB. Reads of one
    file go in file order anyway (``ReadAhead``), and a read is one ``pread`` from the page
    cache or the disk, far quicker than sending the part.
    """

    def __init__(self, part_size: int, parts_ahead: int) -> None:
        self.part_size = part_size
        self.parts_ahead = parts_ahead
        self._sources: dict[str, tuple[Source, ReadAhead, int]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._reader: ThreadPoolExecutor | None = None

    def _read(self, read_at: Callable[[int, int], bytes], start: int, length: int) -> bytes:
        """``read_at`` on the one part-reading thread (see ``SourceNames``), waited for."""
        with self._lock:
            if self._reader is None:
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="s3-part-reader")
            reader = self._reader
        return reader.submit(read_at, start, length).result()

    def close(self) -> None:
        """Stop the part-reading thread (a later upload starts it again)."""
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.shutdown(wait=False)

    @contextlib.contextmanager
    def register(self, source: Source) -> Iterator[tuple[str, ReadAhead]]:
        name = f"<service-backup source {next(self._ids)}>"
        part_size = ChunksizeAdjuster().adjust_chunksize(self.part_size, source.size)
        ahead = ReadAhead(self.parts_ahead * part_size)
        with self._lock:
            self._sources[name] = (source, ahead, part_size)
        try:
            yield name, ahead
        finally:
            with self._lock:
                del self._sources[name]

    def get_file_size(self, filename: str) -> int:
        with self._lock:
            return self._sources[filename][0].size

    def open(self, filename: str, mode: str) -> _PartReader:  # type: ignore[override]
        with self._lock:
            return _PartReader(*self._sources[filename], self._read)


class PartIntegrity:
    """botocore ``before-parameter-build.s3.UploadPart``: the part's checksum (``_checksums``).

    The part is read whole here (``_PartReader`` loads it with one read), then rewound; what
    was sent stays in the request's context for ``PartChecked``. s3transfer's progress
    callbacks are paused meanwhile: this is not bytes on the wire. ``crc32c`` goes as a plain
    header, never a trailer: stores that take no aws-chunked body still get a plain request.
    """

    def __init__(self, checksum: str) -> None:
        self.checksum = checksum

    def __call__(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = params.get("Body")
        if body is None or params.get("ContentMD5") or not hasattr(body, "seek"):
            return
        pause = getattr(body, "signal_not_transferring", None)
        if pause is not None:
            pause()
        try:
            start = body.tell()
            chunks = []
            while chunk := body.read():
                chunks.append(chunk)
            body.seek(start)
        finally:
            resume = getattr(body, "signal_transferring", None)
            if resume is not None:
                resume()
        sent = Sent.for_body(chunks, self.checksum)
        params.update(sent.params())
        context[_SENT_KEY] = sent
        _sign_without_payload_hash(context)


def _sign_without_payload_hash(context: dict[str, Any]) -> None:
    """Sign this part's request with ``UNSIGNED-PAYLOAD``, as botocore does over HTTPS.

    Over plain HTTP botocore's SigV4 hashes every part's body with sha256 for the signature
    (0.7 s of CPU per GiB, on top of the part's checksum and the Source's sha256); over HTTPS
    it does not when the request carries a checksum. This part always does (``Content-MD5`` or
    ``x-amz-checksum-crc32c``, a signed header either way): the store rejects a body that does
    not match it, and ``PartChecked`` checks what the store answers. The payload hash would add
    nothing for a backup's integrity.
    An explicit ``payload_signing_enabled`` in the client's config is left as it is.
    """
    config = context.get("client_config")
    s3 = dict(getattr(config, "s3", None) or {})
    if config is None or "payload_signing_enabled" in s3:
        return
    s3["payload_signing_enabled"] = False
    context["client_config"] = config.merge(BotoConfig(s3=s3))


class PartChecked:
    """botocore ``after-call.s3.UploadPart``: the store must show it kept the part as sent.

    See ``_checksums.Sent.problem``: a store that verifies the part refuses an altered one
    itself; this also catches one that does not (moto, some S3-compatible stores), as the
    single PUT does.
    """

    def __init__(self, kms: bool) -> None:
        self.kms = kms

    def __call__(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        sent = context.get(_SENT_KEY)
        problem = sent.problem(parsed, self.kms) if sent is not None else None
        if problem:
            raise DestinationError(f"integrity check failed: {problem} (a part)")
