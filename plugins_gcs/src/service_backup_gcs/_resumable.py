"""A large file as one GCS resumable upload session, streamed in a single request.

What real GCS does (JSON API, ``uploadType=resumable``): ``POST`` creates a session and
answers its URI. Every ``PUT <session>`` carries ``Content-Range: bytes FIRST-LAST/SIZE``;
GCS finalizes the object, and only then replaces an existing one under the name, when the
byte ``SIZE-1`` has arrived. A request cut off part-way leaves the session open with what
GCS persisted (it may keep less than it received); ``PUT`` with ``Content-Range: bytes
*/SIZE`` answers ``308`` and ``Range: bytes=0-N`` (resume from ``N+1``) or ``200`` with the
object when it is complete. ``DELETE <session>`` cancels it (``499``); an abandoned session
expires after a week. No object exists under the name until the last byte is in.

Why one streamed request rather than the SDK's chunked upload: Google's upload guidance is to
send a resumable upload in a single request when the client can (chunking costs a request
and a round-trip per chunk, and is meant for clients that must bound a single request, e.g.
buffering proxies); a resumable session still lets a failed request continue where GCS
stopped. The SDK's resumable upload reads each chunk into memory (the whole chunk, held
twice while sent), so bounded memory means small chunks and many requests; against
gcp-storage-emulator, which rewrites the partial object on every chunk, a 1 GiB file took
55-70 s with 16-32 MiB chunks, and a few seconds streamed in one request. Here the body is
the core ``Source`` read in ``BLOCK`` pieces: memory is a few blocks whatever the size.

Safety: the ``Source`` raises ``SourceError`` (short, grown, modified) before it hands out the
last bytes, so the request dies with fewer than ``SIZE`` bytes sent and GCS never finalizes;
the session is then cancelled. Any other failure that is not retried cancels it too.

Integrity: the CRC32C of the bytes sent is compared with the one GCS reports for the new
object; on a mismatch the object is deleted (a checksum cannot go in the request's headers,
which leave before the body is read, and reading the file twice to compute it first would
double the I/O). Resuming after a failure restarts the CRC32C from a checkpoint kept every
``BLOCK``, so at most one block is read again besides the bytes re-sent.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import google_crc32c
import requests
from google.api_core import exceptions as api_exceptions

from service_backup.backoff import retry
from service_backup.errors import BackupError, DestinationError
from service_backup.layout import MiB
from service_backup.source import SourceStream
from service_backup.stall import StallGuard, StallRule

from ._errors import Retryable, transient
from ._transport import tracking

if TYPE_CHECKING:
    from .destination import GCSDestination

#: Read size while streaming (and the CRC32C checkpoint interval).
BLOCK: Final = MiB // 4
CONTENT_TYPE: Final = "application/octet-stream"
#: Cancelling a session is a courtesy: it must not hold up the error that caused it.
CANCEL_TIMEOUT: Final = (3.0, 5.0)


class _Body:
    """The request body: the Source's stream from an offset on, with a running CRC32C.

    ``__len__`` makes requests send a Content-Length and stream ``read`` blocks. Every block
    counts as progress for the stall guard (which raises once the transfer was aborted).
    The exact-length and growth checks are the ``Source``'s, not repeated here.
    """

    def __init__(self, stream: SourceStream, size: int) -> None:
        self._stream = stream
        self.size = size
        self.position = 0
        self.crc = 0
        self._marks = [0]  # offsets with a CRC32C checkpoint (every BLOCK)
        self._crcs = [0]
        self.guard: StallGuard | None = None

    def __len__(self) -> int:
        return self.size - self.position

    def resume_at(self, offset: int) -> None:
        """Continue from ``offset``: from the checkpoint before it, re-reading at most a block."""
        index = bisect.bisect_right(self._marks, offset) - 1
        self.position, self.crc = self._marks[index], self._crcs[index]
        self._stream.seek(self.position)
        while self.position < offset:
            self._take(offset - self.position)

    def read(self, size: int = -1) -> bytes:
        return self._take(BLOCK)

    def _take(self, size: int) -> bytes:
        data = self._stream.read(min(size, BLOCK, self.size - self.position))
        self.crc = google_crc32c.extend(self.crc, data)
        self.position += len(data)
        if self.position % BLOCK == 0 and self.position > self._marks[-1]:
            self._marks.append(self.position)
            self._crcs.append(self.crc)
        if self.guard is not None:
            self.guard.progress(len(data))
        return data

    def crc32c(self) -> str:
        return base64.b64encode(self.crc.to_bytes(4, "big")).decode()


class StreamedUpload:
    """One ``write`` of a file above the single-request limit."""

    def __init__(
        self, owner: GCSDestination, name: str, stream: SourceStream, size: int, what: str
    ) -> None:
        self.owner, self.name, self.size, self.what = owner, name, size, what
        self.body = _Body(stream, size)
        self._kept = 0  # the most the session confirmed holding
        self._failed = False
        self._since: float | None = None  # when the current run of failures began

    def run(self) -> dict[str, Any]:
        owner = self.owner
        blob = owner.bucket.blob(self.name)
        url: str = owner.call(
            self.what,
            lambda: blob.create_resumable_upload_session(
                content_type=CONTENT_TYPE,
                size=self.size,
                checksum=None,  # compared below with the CRC32C computed while streaming
                timeout=owner.timeout,
                retry=None,  # the one retry loop is ours
            ),
        )
        try:
            resource = retry(
                lambda: self._attempt(url),
                retryable=self._retryable,
                deadline=math.inf,  # bounded by _retryable: retry_deadline without progress
                first=0.5,
                cap=8.0,
                stop=owner.stop,
            )
        except BaseException as exc:
            self._cancel(url)
            if isinstance(exc, Exception) and not isinstance(exc, BackupError):
                raise owner.errors.translate(exc, self.what) from None
            raise  # SourceError: the core names the file; DestinationError: already one line
        return self._verified(resource)

    def _retryable(self, exc: BaseException) -> bool:
        """Transient failures, for up to ``retry_deadline`` seconds without the session growing."""
        if not transient(exc):
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
        self._failed = True
        return now - self._since < self.owner.retry_deadline

    def _attempt(self, url: str) -> dict[str, Any]:
        offset = 0
        if self._failed:
            state = self._ask(url)
            if isinstance(state, dict):
                return state
            offset = state
            if offset > self._kept:
                self._kept, self._since = offset, None  # progress: a fresh retry budget
        return self._send(url, offset)

    def _watched(self, request: Callable[[], requests.Response]) -> requests.Response:
        guard = self.owner.guard(self.what)
        self.body.guard = guard
        with tracking() as connections, guard.watch(connections.abort):
            try:
                return request()
            except Exception:
                if guard.tripped:
                    raise guard.error() from None
                raise
            finally:
                self.body.guard = None

    def _send(self, url: str, offset: int) -> dict[str, Any]:
        """Stream from ``offset`` to the end; the new object's resource."""
        self.body.resume_at(offset)
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Content-Range": f"bytes {offset}-{self.size - 1}/{self.size}",
        }
        response = self._watched(
            lambda: self.owner.session.put(
                url, data=self.body, headers=headers, timeout=self.owner.timeout
            )
        )
        state = self._outcome(response)
        if isinstance(state, int):
            raise Retryable(f"GCS kept {state} of {self.size} bytes of the upload")
        return state

    def _ask(self, url: str) -> dict[str, Any] | int:
        """Ask the session: finished (the resource) or how many bytes it holds."""
        headers = {"Content-Range": f"bytes */{self.size}"}
        response = self._watched(
            lambda: self.owner.session.put(url, headers=headers, timeout=self.owner.timeout)
        )
        return self._outcome(response)

    def _outcome(self, response: requests.Response) -> dict[str, Any] | int:
        if response.status_code in (200, 201):
            try:
                resource = response.json()
            except ValueError:
                resource = None
            if not isinstance(resource, dict):
                raise self.owner.errors.error(
                    f"{self.what} failed: GCS answered without the object's metadata"
                )
            return resource
        if response.status_code == 308:
            kept = re.fullmatch(r"bytes=0-(\d+)", response.headers.get("Range", ""))
            return int(kept.group(1)) + 1 if kept else 0
        if response.status_code in (404, 410):
            raise self.owner.errors.error(
                f"{self.what} failed: the upload session expired or was cancelled "
                f"(HTTP {response.status_code})"
            )
        raise api_exceptions.from_http_response(response)

    def _cancel(self, url: str) -> None:
        """Best effort, and brief: the error being raised says what failed.

        Cancelling frees the session at once rather than after a week; its bytes were never
        an object, so nothing under the key changes either way. It gets a short stall rule of
        its own: after a stall, the endpoint is likely to stall this request too.
        """
        rule = self.owner.rule
        period = min(CANCEL_TIMEOUT[1], rule.period)
        guard = StallGuard(
            f"cancelling {self.what}", StallRule(period, rule.floor), self.owner.stop
        )
        with (
            contextlib.suppress(Exception),
            tracking() as connections,
            guard.watch(connections.abort),
        ):
            timeout = (min(CANCEL_TIMEOUT[0], period), period)
            self.owner.session.delete(url, timeout=timeout).close()

    def _verified(self, resource: dict[str, Any]) -> dict[str, Any]:
        sent = self.body.crc32c()
        stored = resource.get("crc32c")
        size = int(resource.get("size", -1))
        if size != self.size or self.body.position != self.size or stored not in (None, sent):
            self.owner.discard(self.name)
            raise self.owner.errors.error(
                f"{self.what} failed: checksum mismatch, GCS stored different data than "
                f"was sent ({size} of {self.size} bytes, CRC32C {stored}, sent {sent}); "
                "the object was removed",
                DestinationError,
            )
        return resource
