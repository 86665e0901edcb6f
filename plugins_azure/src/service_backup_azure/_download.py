"""A blob read back as one streaming Get Blob, resumed by range where the connection broke.

Why not the SDK's ``download_blob``: per small blob it builds a ``BlobClient``, a
``StorageStreamDownloader`` and deserializes some fifty response headers into models, which
cost more client CPU than the request itself; restoring many small files is bound by that.
Here the GET is sent through the container client's own pipeline, so the authentication (key,
SAS or token), the retry policy and the abortable transport are the ones every other request
uses, and only the headers a read needs are looked at.

Why one streaming GET and not ranges (measured on Azurite, per GiB): 4 MiB range GETs cost the
emulator 3.6-4.3 s of CPU whether or not each asks for its MD5, one streaming GET 1.1-1.7 s;
the body is taken in ``READ_PIECE`` pieces (the transport's ``connection_data_block_size``:
azure-core's default of 4 KiB cost the client 3.4 s per GiB, 1 MiB pieces 0.3-0.4 s).

What is checked, and why:

* the blob's stored ``Content-MD5``, when it has one, must match the bytes read. A whole-blob
  GET answers it as ``Content-MD5``; every Put Blob stores one, so every file this plugin
  uploaded in one request (up to ``MAX_SINGLE_PUT_SIZE``: small files, manifests) has it, as
  do blobs of tools that set it. A blob of at most ``whole_max`` bytes is read whole when it
  is opened, before any byte is handed out: bytes that do not match are asked for again
  (``SPOILED_RETRIES`` times), then the open fails. A bigger blob is hashed as it streams and
  a mismatch fails its last read: the reader never sees a clean end of file.
* the length: exactly the answer's ``Content-Length``; a body that ends short is a broken
  connection, resumed.
* a resume (``x-ms-range: bytes=N-``) and a blob asked for again are pinned to the first
  answer's ETag (``If-Match``): a blob replaced meanwhile fails the read (412) instead of
  being mixed in. Within one answer the service sends the version it began with.

What is not checked here any more, and why that loses nothing: earlier versions asked for
every 4 MiB range's MD5 (``x-ms-range-get-content-md5``). The service computes that MD5 from
its stored bytes as it sends them, so it covers only the wire, which TLS authenticates on
Azure, and it forced 4 MiB ranges (the emulator's cost above). Blobs without a stored MD5 (the
files this plugin uploads as block lists) are checked by what is read above this class:
``restore`` and ``verify --full`` compare every file's size and sha256 with the manifest, so
a spoiled file fails and is never put in place (the test
``test_a_spoiled_block_list_blob_is_never_restored``). A manifest above 4 MiB (some 27,000
files) is such a blob too: a byte spoiled in it makes it unparsable, or names a size, sha256
or path that then fails that file's own check. Giving block-list blobs a stored MD5 at commit
would cost a whole-file MD5 on every upload and again on every read (1.5 s of CPU per GiB
each) for what the manifest's sha256 already proves.

Memory: a blob read whole is at most ``whole_max`` bytes; a bigger one is prefetched by a
helper thread (which also does the MD5, so network, hashing and the reader's writing overlap),
at most ``PREFETCH_PIECES`` pieces of ``READ_PIECE`` ahead of the reader, whatever its size.

Why the pieces are handed out as they came (``RawRead``), not through a ``BufferedReader``:
http.client receives each piece straight into a ``bytes`` of its own, and a reader asking for
at least a piece (restore asks for 1 MiB) now gets that object itself. Through a buffer each
byte was copied once more into a fresh buffer of the reader's size: reading 1 GiB alone cost
the client 0.44-0.67 s of CPU with it, 0.42-0.59 s without (interleaved runs on Azurite). A
reader asking for less than a piece gets a copy of that much.

Why one stream and not parallel ranged GETs for big blobs (measured for issue 13, 1 GiB on
2 cores): a restore from Azurite is bound by CPU, not by the stream. The emulator and the
client together keep both cores busy (quiet bench: 2.79 + 2.34 s of CPU in 3.14 s, against
2.57 s for 5.13 s of CPU on 2 cores), and a lone read of the blob, nothing written or hashed,
took 1.4-2.1 s. Ranged GETs in parallel did not cost Azurite less CPU per GiB, and the SDK's
``download_blob`` of ranges cost the client 1.6-2.3 s of CPU per GiB against 0.4-0.6 s for
this stream; a wider prefetch window (16 pieces) or smaller pieces (256 KiB) changed nothing
measurable.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import threading
from collections.abc import Callable, Iterator
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
from service_backup.layout import MiB
from service_backup.raw_read import RawRead

if TYPE_CHECKING:
    from .destination import AzureDestination


class Spoiled(Exception):
    """The bytes of a blob read whole did not match its stored MD5: spoiled on the way."""


class Cut(Exception):
    """The body ended before its ``Content-Length``: the connection broke."""


class _Closing(Exception):
    """The reader was closed: the prefetching thread stops."""


#: Failures while a body was read (a broken connection, bytes spoiled on the way): the read
#: goes on from where it broke (or, for a blob read whole, from the start).
BROKEN: Final = (
    ServiceRequestError,
    ServiceResponseError,
    IncompleteReadError,
    ConnectionError,
    Cut,
    Spoiled,
)
#: How long one piece keeps retrying broken connections (the pipeline's retry policy already
#: retried the request itself).
RANGE_RETRY_SECONDS: Final = 30.0
#: How often a blob read whole whose bytes did not match its stored MD5 is asked for again.
SPOILED_RETRIES: Final = 2
#: The pieces a body is taken in (the transport's ``connection_data_block_size``).
READ_PIECE: Final = 1 * MiB
#: How many pieces a big blob's helper thread reads ahead of the reader.
PREFETCH_PIECES: Final = 4


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class BlobRead(RawRead):
    """``open_read``: the GET is sent (a missing blob reported) when it is created.

    ``whole_max``: blobs up to this size are read whole, and checked, right away; ``prefetch``:
    pieces a helper thread reads ahead for bigger blobs (0: read as the reader asks).
    """

    readall_piece = READ_PIECE

    def __init__(
        self,
        owner: AzureDestination,
        key: str,
        whole_max: int,
        prefetch: int = PREFETCH_PIECES,
    ) -> None:
        super().__init__()
        self._owner, self._key = owner, key
        self._name = owner.layout.full(key)
        self._url = owner.blob_url(self._name)
        self._what = f"reading {owner.container_name}/{self._name}"
        self._opened = False  # the first answer came: size, ETag and stored MD5 are known
        self._etag: str | None = None
        self._stored_md5: str | None = None
        self._size = 0
        self._received = 0  # bytes taken from the service so far
        self._md5: Any = None  # running MD5 of a streamed blob with a stored one
        self._response: Any = None
        self._pieces: Iterator[bytes] | None = None  # the open body, from ``_received`` on
        self._current = memoryview(b"")
        self._closing = False
        self._ended = False  # the reader was handed the end of the blob
        self._ready: collections.deque[bytes | BaseException | None] = collections.deque()
        self._turn = threading.Condition()
        self._depth = prefetch
        self._thread: threading.Thread | None = None
        #: The whole blob, when it was read (and checked) whole on opening.
        self.whole: bytes | None = None
        try:
            self._attempts(lambda: self._open(0))
            if self._size <= whole_max:
                self.whole = self._attempts(self._read_whole)
                self._current = memoryview(self.whole)
                self._ended = True
        except BaseException:
            self._drop()
            raise
        if not self._ended and prefetch > 0:
            self._thread = threading.Thread(target=self._prefetch, name="azure-read", daemon=True)
            self._thread.start()

    # -- requests ----------------------------------------------------------------------------

    def _open(self, start: int) -> None:
        """Send the GET for the bytes from ``start`` on (pinned to the ETag once known)."""
        self._drop()
        if self._closing:
            raise _Closing()
        asked = {"x-ms-version": self._owner.api_version}
        if start:
            asked["x-ms-range"] = f"bytes={start}-"
        if self._opened:
            if not self._etag:  # nothing to pin the rest to: it could be another version
                raise DestinationError(
                    f"{self._what} failed: the connection broke and the blob has no ETag "
                    "to resume it by"
                )
            asked["If-Match"] = self._etag
        response = self._owner.pipeline_run(HttpRequest("GET", self._url, headers=asked))
        self._response = response
        self._check_status(response, 206 if start else 200)
        answer = response.headers
        length = answer.get("content-length", "")
        if not length.isdigit():
            raise DestinationError(f"{self._what} failed: the answer has no Content-Length")
        if not self._opened:
            self._etag = answer.get("etag")
            self._size = int(length)
            self._stored_md5 = answer.get("content-md5") or answer.get("x-ms-blob-content-md5")
            self._opened = True
        elif start + int(length) != self._size or (
            start and not answer.get("content-range", "").startswith(f"bytes {start}-")
        ):
            raise DestinationError(
                f"{self._what} failed: Azure Storage answered bytes {start}- with "
                f"{answer.get('content-range') or length + ' bytes'} (blob of {self._size})"
            )
        self._pieces = response.iter_raw()

    def _drop(self) -> None:
        """Let go of the open answer (its connection is closed unless it was read to the end)."""
        response, self._response, self._pieces = self._response, None, None
        if response is not None:
            response.close()

    def _attempts(self, call: Callable[[], Any]) -> Any:
        """``call`` again while a connection breaks (for ``RANGE_RETRY_SECONDS``) or a blob read
        whole arrives spoiled (``SPOILED_RETRIES`` times); errors as one line naming the blob."""
        spoiled = [0]

        def retryable(exc: BaseException) -> bool:
            if self._closing:
                return False
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
        except (DestinationError, _Closing):
            raise
        except AzureError as exc:
            raise self._owner._error(exc, self._what, self._key) from None
        except (ConnectionError, Spoiled, Cut) as exc:
            raise DestinationError(f"{self._what} failed: {exc}") from None

    def _read_whole(self) -> bytes:
        """The whole (small) blob, its length and stored MD5 checked; asked for again when a
        previous attempt broke or was spoiled (pinned to the ETag, so never another version)."""
        if self._pieces is None:
            self._open(0)
        assert self._pieces is not None
        try:
            pieces = list(self._pieces)
        finally:
            self._drop()
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if len(body) != self._size:
            raise Cut(f"the connection ended after {len(body)} of {self._size} bytes")
        if self._stored_md5 is not None:
            actual = md5_b64(body)
            if actual != self._stored_md5:
                raise Spoiled(
                    f"checksum mismatch (MD5 {actual}, stored Content-MD5 {self._stored_md5})"
                )
        self._received = self._size
        return body

    def _next_piece(self) -> bytes | None:
        """The next piece of a streamed blob (None at its end, once its MD5 matched); reopens
        the body from ``_received`` on when the connection broke."""
        if self._received >= self._size:
            return None
        if self._pieces is None:
            self._open(self._received)
        assert self._pieces is not None
        try:
            piece = next(self._pieces, b"")
        except BaseException:
            self._drop()
            raise
        if not piece:
            self._drop()
            raise Cut(f"the connection ended after {self._received} of {self._size} bytes")
        if len(piece) > self._size - self._received:
            raise DestinationError(f"{self._what} failed: more bytes than its {self._size}")
        if self._stored_md5 is not None:
            if self._md5 is None:
                self._md5 = hashlib.md5(usedforsecurity=False)
            self._md5.update(piece)
        self._received += len(piece)
        if self._received == self._size:
            self._finish()
        return piece

    def _finish(self) -> None:
        """At the last byte: the body ends there (its connection goes back to the pool), and the
        whole blob's MD5 matches the stored one."""
        assert self._pieces is not None
        try:
            extra = next(self._pieces, b"")
        except BROKEN:
            extra = b""  # every byte is in; only the connection's release failed
        self._drop()
        if extra:
            raise DestinationError(f"{self._what} failed: more bytes than its {self._size}")
        if self._stored_md5 is not None:
            actual = base64.b64encode(self._md5.digest()).decode()
            if actual != self._stored_md5:
                raise DestinationError(
                    f"{self._what} failed: checksum mismatch (MD5 {actual}, stored "
                    f"Content-MD5 {self._stored_md5})"
                )

    # -- checks ------------------------------------------------------------------------------

    def _check_status(self, response: Any, expected: int) -> None:
        status = response.status_code
        if status == expected:
            return
        if status == 412:
            raise DestinationError(
                f"{self._what} failed: the blob was replaced while it was read "
                f"(ETag {self._etag} is gone)"
            )
        response.read()  # an error's body is small; the SDK's error reads it
        code = response.headers.get("x-ms-error-code", "")
        if status == 404 and self._opened and code != "ContainerNotFound":
            raise ObjectNotFound(
                f"{self._key} not found in {self._owner.describe('')} (deleted while read)"
            )
        if status in (200, 206):
            raise DestinationError(
                f"{self._what} failed: Azure Storage answered HTTP {status} where "
                f"{expected} was expected"
            )
        raise HttpResponseError(response=response)

    # -- the helper thread -------------------------------------------------------------------

    def _prefetch(self) -> None:
        """Read pieces ahead of the reader; an error is handed over in their place."""
        item: bytes | BaseException | None
        try:
            while True:
                item = self._attempts(self._next_piece)
                if not self._hand_over(item) or item is None:
                    return
        except _Closing:
            pass
        except BaseException as exc:  # handed to the reader, raised there
            self._hand_over(exc)
        finally:
            self._drop()

    def _hand_over(self, item: bytes | BaseException | None) -> bool:
        """Queue ``item`` for the reader, waiting while ``PREFETCH_PIECES`` are queued; False
        once the reader was closed."""
        with self._turn:
            while len(self._ready) >= self._depth and not self._closing:
                self._turn.wait()
            if self._closing:
                return False
            self._ready.append(item)
            self._turn.notify_all()
            return True

    def _take(self) -> bytes | None:
        if self._thread is None:
            return self._attempts(self._next_piece)  # type: ignore[no-any-return]
        with self._turn:
            while not self._ready:
                self._turn.wait()
            item = self._ready.popleft()
            self._turn.notify_all()
        if isinstance(item, BaseException):
            self._ready.appendleft(item)  # every later read fails the same way
            raise item
        return item

    # -- reading -----------------------------------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        """The next piece itself when it fits in ``size`` (no copy), else ``size`` bytes of it."""
        if size is None or size < 0:
            return self.readall()
        if self.closed:
            raise ValueError("read from a closed stream")
        if not size:
            return b""
        if not self._current:
            if self._ended:
                return b""
            piece = self._take()
            if piece is None:
                self._ended = True
                return b""
            if len(piece) <= size:
                return piece
            self._current = memoryview(piece)
        data = self._current[:size].tobytes()
        self._current = self._current[len(data) :]
        return data

    def close(self) -> None:
        """Stop the helper thread (it ends after the piece it is reading) and free the pieces."""
        with self._turn:
            self._closing = True
            self._ready.clear()
            self._turn.notify_all()
        if self._thread is None:
            self._drop()
        self._current = memoryview(b"")
        super().close()
