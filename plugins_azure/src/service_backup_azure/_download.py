"""A blob read back in ranges of ``READ_CHUNK_SIZE``: one GET per range, each checked.

Why not the SDK's ``download_blob``: per small blob it builds a ``BlobClient``, a
``StorageStreamDownloader`` and deserializes some fifty response headers into models, which
cost more client CPU than the request itself; restoring many small files is bound by that.
Here each range is one ``Get Blob`` sent through the container client's own pipeline, so the
authentication (key, SAS or token), the retry policy and the abortable transport are the ones
every other request uses, and only the headers a read needs are looked at.

What is checked, as ``download_blob(validate_content=True)`` did, and one thing more:

* every range asks for its MD5 (``x-ms-range-get-content-md5``, hence at most 4 MiB) and its
  bytes must match the ``Content-MD5`` the service computed when it answers one (a range
  spoiled on the way is asked for again, ``SPOILED_RETRIES`` times at most);
* the blob's stored ``Content-MD5`` (``x-ms-blob-content-md5``, set by a Put Blob and by tools
  that upload whole files), when it has one, must match the bytes read: for a blob that fits
  in one range that is the range's own MD5, larger ones are hashed as they are read;
* every range after the first is pinned to the first one's ETag (``If-Match``), so a blob
  replaced meanwhile fails the read (412) instead of being mixed in.

A range is read whole (at most ``READ_CHUNK_SIZE`` in memory) before any of its bytes are
handed out, so a connection that breaks mid-range is simply asked for that range again.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest

from service_backup.backoff import retry
from service_backup.errors import DestinationError, ObjectNotFound

if TYPE_CHECKING:
    from .destination import AzureDestination


class Spoiled(Exception):
    """A range's bytes did not match the MD5 the service computed: spoiled on the way."""


#: Failures while a range's body was read (a broken connection, bytes spoiled on the way):
#: that range is asked for again.
BROKEN: Final = (
    ServiceRequestError,
    ServiceResponseError,
    IncompleteReadError,
    ConnectionError,
    Spoiled,
)
#: How long reading one range keeps retrying broken connections (the pipeline's retry policy
#: already retried the request itself).
RANGE_RETRY_SECONDS: Final = 30.0
#: How often a range whose bytes did not match its MD5 is asked for again.
SPOILED_RETRIES: Final = 2


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class BlobRead(io.RawIOBase):
    """``open_read``: the first range is fetched (a missing blob reported) when it is created."""

    def __init__(self, owner: AzureDestination, key: str, chunk_size: int) -> None:
        super().__init__()
        self._owner, self._key, self._chunk_size = owner, key, chunk_size
        self._name = owner.layout.full(key)
        self._url = owner.blob_url(self._name)
        self._what = f"reading {owner.container_name}/{self._name}"
        self._etag: str | None = None
        self._blob_md5: str | None = None
        self._whole: Any = None  # a running MD5 when a multi-range blob has a stored one
        self._size = 0
        self._next = 0  # offset of the next range to fetch
        self._current = memoryview(b"")
        self._current = memoryview(self._fetch_first())

    def readable(self) -> bool:
        return True

    # -- requests ----------------------------------------------------------------------------

    def _get(self, headers: dict[str, str]) -> tuple[Any, bytes]:
        """One Get Blob through the container's pipeline: the response and its whole body."""
        request = HttpRequest("GET", self._url, headers=headers)
        response = self._owner.pipeline_run(request)
        body = response.read()
        return response, body

    def _checked(self, response: Any, body: bytes, start: int) -> str | None:
        """The body's MD5 when the service sent the range's; ``Spoiled`` when they differ."""
        sent = response.headers.get("content-md5")
        if sent is None:
            return None
        actual = md5_b64(body)
        if actual != sent:
            raise Spoiled(
                f"checksum mismatch in bytes {start}-{start + len(body) - 1} "
                f"(MD5 {actual}, the service sent {sent})"
            )
        return actual

    def _attempts(self, call: Callable[[], Any]) -> Any:
        """``call`` again while a connection breaks mid-body (for ``RANGE_RETRY_SECONDS``) or
        its bytes arrive spoiled (``SPOILED_RETRIES`` times)."""
        spoiled = [0]

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, Spoiled):  # rare on the way; a server that insists is not
                spoiled[0] += 1
                return spoiled[0] <= SPOILED_RETRIES
            return isinstance(exc, BROKEN)

        try:
            return retry(
                call,
                retryable=retryable,
                deadline=RANGE_RETRY_SECONDS,
                first=0.5,
                cap=4.0,
                stop=self._owner.stop,
            )
        except DestinationError:
            raise
        except AzureError as exc:
            raise self._owner._error(exc, self._what, self._key) from None
        except (ConnectionError, Spoiled) as exc:
            raise DestinationError(f"{self._what} failed: {exc}") from None

    def _range_headers(self, start: int) -> dict[str, str]:
        end = start + self._chunk_size - 1
        return {
            "x-ms-version": self._owner.api_version,
            "x-ms-range": f"bytes={start}-{end}",
            "x-ms-range-get-content-md5": "true",
        }

    def _fetch_first(self) -> bytes:
        def attempt() -> tuple[bytes, str | None]:
            response, body = self._get(self._range_headers(0))
            if response.status_code == 416:  # an empty blob has no byte 0
                response, body = self._get({"x-ms-version": self._owner.api_version})
            self._check_status(response, (200, 206), first=True)
            headers = response.headers
            self._etag = headers.get("etag")
            self._blob_md5 = headers.get("x-ms-blob-content-md5")
            total = headers.get("content-range", "").rpartition("/")[2]
            self._size = int(total) if total.isdigit() else len(body)
            return body, self._checked(response, body, 0)

        body, md5 = self._attempts(attempt)
        self._accept(body, md5)
        return body

    def _fetch_next(self) -> bytes:
        start = self._next

        def attempt() -> tuple[bytes, str | None]:
            headers = self._range_headers(start)
            if self._etag:
                headers["If-Match"] = self._etag
            response, body = self._get(headers)
            self._check_status(response, (206,), first=False)
            return body, self._checked(response, body, start)

        body, md5 = self._attempts(attempt)
        self._accept(body, md5)
        return body

    # -- checks ------------------------------------------------------------------------------

    def _check_status(self, response: Any, expected: tuple[int, ...], first: bool) -> None:
        status = response.status_code
        if status in expected:
            return
        if status == 412:
            raise DestinationError(
                f"{self._what} failed: the blob was replaced while it was read "
                f"(ETag {self._etag} is gone)"
            )
        code = response.headers.get("x-ms-error-code", "")
        if status == 404 and not first and code != "ContainerNotFound":
            raise ObjectNotFound(
                f"{self._key} not found in {self._owner.describe('')} (deleted while read)"
            )
        if status in (200, 206):
            raise DestinationError(
                f"{self._what} failed: Azure Storage answered HTTP {status} to a range request"
            )
        raise HttpResponseError(response=response)

    def _accept(self, body: bytes, md5: str | None) -> None:
        """Count a range's (already checked) bytes read; check the blob's stored MD5 at the end.

        ``md5``: the range's MD5 when it was computed already (saves hashing a whole small
        blob twice).
        """
        start = self._next
        expected = min(self._chunk_size, self._size - start)
        if len(body) != expected:
            raise DestinationError(
                f"{self._what} failed: {len(body)} bytes at offset {start}, expected {expected}"
            )
        self._next = start + len(body)
        if not self._blob_md5:
            return
        if start == 0 and self._next == self._size:  # the range is the whole blob
            self._compare_whole(md5 or md5_b64(body))
            return
        if self._whole is None:
            self._whole = hashlib.md5(usedforsecurity=False)
        self._whole.update(body)
        if self._next >= self._size:
            self._compare_whole(base64.b64encode(self._whole.digest()).decode())

    def _compare_whole(self, actual: str) -> None:
        if actual != self._blob_md5:
            raise DestinationError(
                f"{self._what} failed: checksum mismatch (MD5 {actual}, stored Content-MD5 "
                f"{self._blob_md5})"
            )

    # -- reading -----------------------------------------------------------------------------

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed stream")
        while not self._current:
            if self._next >= self._size:
                return 0
            self._current = memoryview(self._fetch_next())
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._current))
        view[:count] = self._current[:count]
        self._current = self._current[count:]
        return count

    def close(self) -> None:
        self._current = memoryview(b"")
        super().close()
