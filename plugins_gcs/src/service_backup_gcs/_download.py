"""An object read in one streamed GET, resumed with a Range after a network failure.

One request per object: no metadata GET first. The media GET's own answer says what was
read: ``X-Goog-Generation`` (the version served), ``X-Goog-Hash`` (the CRC32C GCS stored
with it) and ``X-Goog-Stored-Content-Length`` (its size; ``Content-Length`` where absent).
A 404 means the object is not stored. This is what google-cloud-storage's own downloads do,
and it halves the requests (and the client CPU) of reading many small objects back.

A resume after a network failure asks for the rest (``Range``) of that same generation, so
an object overwritten meanwhile is never mixed in: GCS answers 404 for a generation that is
gone. A server that names no generation (gcp-storage-emulator) is resumed unpinned only when
it gave a CRC32C, which then catches a mix; without either the read fails instead.

Memory is what one ``read`` asks for, whatever the size: the stream is unbuffered and hands
over the response's bytes as they come. Ranged reads carry no checksum, so a running CRC32C
is compared with the one the first answer gave once the last byte has been read. The
reader's lifetime is one stall-guarded transfer: a server that stops sending, or shutdown,
cuts the connection (the guard's timer starts only once the read has lasted a moment,
``service_backup.stall_watches``). The GET goes through ``GCSDestination.media_get``: the
authorized session without its per-call request merging.
"""

from __future__ import annotations

import base64
import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import google_crc32c
import urllib3

from service_backup.backoff import retry
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.raw_read import RawRead

from ._errors import transient
from ._resumable import BLOCK
from ._transport import Connections, tracking

if TYPE_CHECKING:
    from .destination import GCSDestination

T = TypeVar("T")


def stored_hashes(response: urllib3.BaseHTTPResponse) -> dict[str, str]:
    """``X-Goog-Hash: crc32c=...,md5=...`` (repeated headers arrive joined by commas)."""
    found: dict[str, str] = {}
    for part in response.headers.get("x-goog-hash", "").split(","):
        name, _, value = part.strip().partition("=")
        if name and value:
            found[name.lower()] = value.strip()
    return found


def _crc32c_b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


class StreamedRead(RawRead):
    """``open_read``: the GET is sent (and a missing object reported) when it is created."""

    readall_piece = BLOCK

    def __init__(self, owner: GCSDestination, key: str, name: str, url: str) -> None:
        """``name``: the object's full name (``layout.full(key)``), ``url``: its media GET."""
        super().__init__()
        self._owner, self._key, self._url = owner, key, url
        self._size = 0
        self._expected: str | None = None
        self._generation: str | None = None
        self._crc = 0
        self._position = 0
        self._started = False
        self._response: urllib3.BaseHTTPResponse | None = None
        self._verified = False
        self._what = f"reading {owner.bucket_name}/{name}"
        self._guard = owner.guard(self._what)
        self._connections = Connections()
        self._since: float | None = None
        # Entered and left by hand (no ExitStack): one fewer object per small read.
        self._watch: contextlib.AbstractContextManager[object] | None = owner.reads.watch(
            self._guard, self._connections.abort
        )
        self._watch.__enter__()
        try:
            self._response = self._retried(self._open)
        except BaseException:
            self._unwatch()
            raise
        self._started = True

    @property
    def generation(self) -> str | None:
        """The generation being read, as GCS named it (None when the server names none)."""
        return self._generation

    def _resume_url(self) -> str:
        if self._generation is not None:
            return f"{self._url}&generation={self._generation}"
        if self._expected is None:
            # Nothing would tell a newer object's bytes from the rest of this one.
            raise self._owner.errors.error(
                f"{self._what} failed: the connection broke at byte {self._position} and GCS "
                "named neither the object's generation nor its CRC32C, so the rest cannot be "
                "read safely"
            )
        return self._url  # unpinned: the CRC32C check at the end catches a mixed object

    def _open(self) -> urllib3.BaseHTTPResponse:
        resuming = self._started
        url = self._resume_url() if resuming else self._url
        headers = {"Range": f"bytes={self._position}-"} if resuming else {}
        with tracking(self._connections):
            response = self._owner.media_get(url, headers)
        try:
            status = response.status
            if status == 404:
                if resuming:
                    raise ObjectNotFound(
                        self._owner.missing(self._key) + " (replaced or deleted while read)"
                    )
                raise ObjectNotFound(self._owner.missing(self._key))
            if resuming and status == 200:
                raise self._owner.errors.error(f"{self._what} failed: GCS ignored the Range")
            if status not in (200, 206):
                raise self._owner.media_error(url, response)
            if resuming:
                self._check_resumed(response)
            else:
                self._describe(response)
        except BaseException:
            _close(response)
            raise
        return response

    def _describe(self, response: urllib3.BaseHTTPResponse) -> None:
        """What the first answer says about the object: size, CRC32C, generation."""
        headers = response.headers
        self._generation = headers.get("x-goog-generation") or None
        self._expected = stored_hashes(response).get("crc32c")
        length = headers.get("x-goog-stored-content-length")
        if length is None and response.status == 206:
            length = headers.get("content-range", "").rpartition("/")[2]
        if length is None:
            length = headers.get("content-length")
        try:
            self._size = int(length or "")
        except ValueError:
            raise self._owner.errors.error(
                f"{self._what} failed: GCS answered without the object's length"
            ) from None

    def _check_resumed(self, response: urllib3.BaseHTTPResponse) -> None:
        served = response.headers.get("x-goog-generation")
        if served and self._generation and served != self._generation:
            raise ObjectNotFound(
                self._owner.missing(self._key) + " (replaced while read: generation "
                f"{served} served instead of {self._generation})"
            )
        start = response.headers.get("content-range", "").removeprefix("bytes ").partition("-")[0]
        if start and start != str(self._position):
            raise self._owner.errors.error(
                f"{self._what} failed: asked GCS for the rest from byte {self._position}, "
                f"it answered from byte {start}"
            )

    def _read_some(self, wanted: int) -> bytes:
        try:
            if self._response is None:
                self._response = self._open()
            data: bytes = self._response.read(wanted, decode_content=False)
            if not data:
                raise ConnectionError("the download ended early")
            return data
        except Exception:
            self._drop()
            if self._guard.tripped:
                raise self._guard.error() from None
            raise

    def _retryable(self, exc: BaseException) -> bool:
        """Transient failures, for up to ``retry_deadline`` seconds without a byte read."""
        if not transient(exc):
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return now - self._since < self._owner.retry_deadline

    def _retried(self, call: Callable[[], T]) -> T:
        try:
            result = retry(
                call,
                retryable=self._retryable,
                deadline=math.inf,  # bounded by _retryable
                first=0.5,
                cap=8.0,
                stop=self._owner.stop,
            )
        except DestinationError:
            raise
        except Exception as exc:
            if self._guard.tripped:
                raise self._guard.error() from None
            raise self._owner.errors.translate(exc, self._what) from None
        self._since = None
        return result

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes as the connection hands them over (fewer near the end).

        Served straight from the response, not through a buffer: no copy, and no buffer
        allocated per object, which counts when the objects are small and many.
        """
        if size is None or size < 0:
            return self.readall()
        if self.closed:
            raise ValueError("read from a closed stream")
        if self._position >= self._size or size == 0:
            if size:
                self._finish()
            return b""
        wanted = min(size, self._size - self._position)
        data = self._retried(lambda: self._read_some(wanted))
        self._took(data)
        return data

    def _took(self, data: bytes) -> None:
        count = len(data)
        self._crc = google_crc32c.extend(self._crc, data)
        self._position += count
        self._guard.progress(count)
        if self._position >= self._size:
            self._finish()

    def _finish(self) -> None:
        self._drop()
        self._verify()

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        if self._expected is None:
            return
        actual = _crc32c_b64(self._crc)
        if actual != self._expected:
            raise self._owner.errors.error(
                f"{self._what} failed: checksum mismatch (CRC32C {actual}, stored {self._expected})"
            )

    def _drop(self) -> None:
        if self._response is not None:
            _close(self._response)
            self._response = None

    def close(self) -> None:
        if not self.closed:
            self._drop()
            self._unwatch()
        super().close()

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.__exit__(None, None, None)


def _close(response: urllib3.BaseHTTPResponse) -> None:
    """Done with ``response``, as ``requests.Response.close`` is: a connection whose answer was
    read to its end is already back in the pool for the next GET; one cut short is closed (its
    unread bytes must never reach the next request), and its pool slot given back."""
    response.close()
    response.release_conn()
