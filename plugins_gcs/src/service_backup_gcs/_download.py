"""An object read in one streamed GET, resumed with a Range after a network failure.

Memory is one socket buffer whatever the size; the emulator (which loads the whole object
for every request) reads it once. Ranged reads carry no checksum, so a running CRC32C is
compared with the object's when the last byte has been read. The reader's lifetime is one
stall-guarded transfer: a server that stops sending, or shutdown, cuts the connection.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import time
from typing import TYPE_CHECKING, Any

import google_crc32c
import requests
from google.api_core import exceptions as api_exceptions

from service_backup.backoff import retry
from service_backup.errors import DestinationError, ObjectNotFound

from ._errors import transient
from ._transport import Connections, tracking

if TYPE_CHECKING:
    from .destination import GCSDestination


class StreamedRead(io.RawIOBase):
    def __init__(
        self, owner: GCSDestination, key: str, url: str, size: int, crc32c: str | None
    ) -> None:
        super().__init__()
        self._owner, self._key, self._url = owner, key, url
        self._size, self._expected = size, crc32c
        self._crc = 0
        self._position = 0
        self._response: requests.Response | None = None
        self._verified = False
        self._what = f"reading {owner.where(key)}"
        self._guard = owner.guard(self._what)
        self._connections = Connections()
        self._watch = contextlib.ExitStack()
        self._watch.enter_context(self._guard.watch(self._connections.abort))
        self._since: float | None = None

    def readable(self) -> bool:
        return True

    def _open(self) -> requests.Response:
        headers = {"Range": f"bytes={self._position}-"} if self._position else {}
        with tracking(self._connections):
            response = self._owner.session.get(
                self._url, headers=headers, stream=True, timeout=self._owner.timeout
            )
        expected = 206 if self._position else 200
        if response.status_code == expected or (response.status_code == 206 and not headers):
            return response
        try:
            if response.status_code == 404:
                raise ObjectNotFound(self._owner.missing(self._key) + " (deleted while read)")
            if response.status_code == 200:
                raise self._owner.errors.error(f"{self._what} failed: GCS ignored the Range")
            raise api_exceptions.from_http_response(response)
        finally:
            response.close()

    def _read_some(self, wanted: int) -> bytes:
        try:
            if self._response is None:
                self._response = self._open()
            data: bytes = self._response.raw.read(wanted, decode_content=False)
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

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed stream")
        if self._position >= self._size:
            self._verify()
            return 0
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._position)
        try:
            data = retry(
                lambda: self._read_some(wanted),
                retryable=self._retryable,
                deadline=math.inf,  # bounded by _retryable
                first=0.5,
                cap=8.0,
                stop=self._owner.stop,
            )
        except DestinationError:
            raise
        except Exception as exc:
            raise self._owner.errors.translate(exc, self._what) from None
        self._since = None
        count = len(data)
        view[:count] = data
        self._crc = google_crc32c.extend(self._crc, data)
        self._position += count
        self._guard.progress(count)
        if self._position >= self._size:
            self._verify()
        return count

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        if self._expected is None:
            return
        actual = base64.b64encode(self._crc.to_bytes(4, "big")).decode()
        if actual != self._expected:
            raise self._owner.errors.error(
                f"{self._what} failed: checksum mismatch (CRC32C {actual}, stored {self._expected})"
            )

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        if not self.closed:
            self._drop()
            self._watch.close()
        super().close()
