"""The ``azure`` destination: block blobs in one container, under ``path``.

Blob names are ``<path>/<key>``; a run's keys are ``[<deployment>/]YYYY/MM/DD/<relative path>``.

How the transfer is tuned, and why:

* Files up to ``MAX_SINGLE_PUT_SIZE`` go up as one Put Blob (one request per small file is what
  makes 5,000 small files fast); bigger files as ``MAX_BLOCK_SIZE`` blocks, ``MAX_CONCURRENCY``
  of them in flight per blob, committed by one Put Block List at the end. Until that commit
  nothing of a new upload is visible, so a failed upload never leaves a blob that looks complete.
* The SDK reads one block into memory per in-flight request, so a blob costs at most
  ``MAX_CONCURRENCY`` x ``MAX_BLOCK_SIZE`` of buffers whatever the file size, and a run at most
  ``file_concurrency`` times that.
* Integrity: every Put Blob and Put Block carries the block's MD5 (``validate_content``); the
  service recomputes it and refuses a mismatch, so a corrupted transfer fails instead of being
  stored. Reads ask for and check the MD5 of every range the same way.
* Retries: 5xx, 408 and throttling (503 ServerBusy, 500 OperationTimedOut) are retried with
  exponential back-off (3, 5, 9, 17 s, each +-1 s of jitter) within ``RETRY_TOTAL`` retries:
  under 40 s of waiting per request at worst. Connection failures get only ``RETRY_CONNECT``
  retries (3 + 5 s), so a closed port or an unresolvable account fails in about 8 s, not the
  SDK's default minute.
* Timeouts: ``CONNECT_TIMEOUT`` to open a connection, ``READ_TIMEOUT`` between bytes of a response.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import IO, Final

import requests
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobClient, ContainerClient, ExponentialRetry
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound, SourceError
from service_backup.source import Source

from .config import AzureConfig, account_url

MiB: Final = 1024 * 1024

MAX_SINGLE_PUT_SIZE: Final = 4 * MiB
MAX_BLOCK_SIZE: Final = 4 * MiB
MAX_CONCURRENCY: Final = 4
#: Range size for reads; 4 MiB is the most the service will return a range MD5 for.
READ_CHUNK_SIZE: Final = 4 * MiB

CONNECT_TIMEOUT: Final = 10
READ_TIMEOUT: Final = 60
RETRY_TOTAL: Final = 4
RETRY_CONNECT: Final = 2
LIST_PAGE_SIZE: Final = 5000  # the service's maximum

FILE_CONCURRENCY: Final = 8
#: One connection per request that can be in flight, so none is opened and thrown away.
POOL_SIZE: Final = FILE_CONCURRENCY * MAX_CONCURRENCY + 4

_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
_quiet_lock = threading.Lock()
_quieted = False


def quiet_sdk_logging() -> None:
    """Keep the SDK's loggers away from stdout and the operator's log.

    azure-core logs requests and response headers (``HttpLoggingPolicy``, at INFO) and the
    storage SDK logs what it signs; if anything in the process configured the root logger,
    those lines would land among the JSON log lines on stdout. Every outcome reaches the
    operator as a ``DestinationError`` instead, so the ``azure`` logger tree gets its own
    null handler and stops propagating.
    """
    global _quieted
    with _quiet_lock:
        if _quieted:
            return
        sdk_logger = logging.getLogger("azure")
        sdk_logger.addHandler(logging.NullHandler())
        sdk_logger.propagate = False
        sdk_logger.setLevel(logging.CRITICAL)
        _quieted = True


def _session(url: str) -> requests.Session:
    """A session sized for every request the uploads can have in flight at once.

    The environment (``HTTPS_PROXY``/``NO_PROXY``, ``REQUESTS_CA_BUNDLE``) is honoured as
    requests would, but read once here: with ``trust_env`` requests re-reads every variable
    and ``~/.netrc`` on each request, a large share of the client's CPU per small file.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = HTTPAdapter(
        pool_connections=2,
        pool_maxsize=POOL_SIZE,
        # The SDK's retry policy does the retrying; urllib3 must not retry underneath it.
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class AzureDestination(Destination):
    """Block blobs in ``container`` under ``path``."""

    #: Files uploaded at once. A small file is one round trip, so many small files are
    #: latency-bound and need requests in flight to keep the service busy; 8 is where tuned
    #: SDK clients beat rclone on Azurite, and more only queue behind the server. Memory stays
    #: bounded: at most 8 blobs x 4 blocks x 4 MiB of buffers (one 2 GiB file: ~80 MiB RSS).
    file_concurrency = FILE_CONCURRENCY

    def __init__(self, config: AzureConfig, context: DestinationContext) -> None:
        quiet_sdk_logging()
        self.name = context.display_name
        self.account = config.storage_account
        self.account_url = account_url(config)
        self.container_name = config.container
        self.base = config.path.strip("/")
        self.list_page_size = LIST_PAGE_SIZE
        self._session = _session(self.account_url)
        self.retry_policy = ExponentialRetry(
            initial_backoff=1,
            increment_base=2,
            random_jitter_range=1,
            retry_total=RETRY_TOTAL,
            retry_connect=RETRY_CONNECT,
            retry_read=3,
            retry_status=RETRY_TOTAL,
        )
        self._container = ContainerClient(
            self.account_url,
            self.container_name,
            credential={
                "account_name": config.storage_account,
                "account_key": "".join(config.storage_access_key.reveal().split()),
            },
            transport=RequestsTransport(
                session=self._session,
                session_owner=False,
                connection_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
            ),
            retry_policy=self.retry_policy,
            max_single_put_size=MAX_SINGLE_PUT_SIZE,
            max_block_size=MAX_BLOCK_SIZE,
            max_single_get_size=READ_CHUNK_SIZE,
            max_chunk_get_size=READ_CHUNK_SIZE,
            logging_enable=False,
            user_agent=f"service-backup-azure/{_version()}",
        )

    @property
    def container_url(self) -> str:
        """The container's URL as the SDK will address it (no request is made)."""
        return str(self._container.url)

    # -- names -------------------------------------------------------------------------------

    def _blob_name(self, key: str) -> str:
        key = key.strip("/")
        if not key:
            raise DestinationError("invalid empty key")
        return f"{self.base}/{key}" if self.base else key

    def _key_of(self, blob_name: str) -> str:
        return blob_name[len(self.base) + 1 :] if self.base else blob_name

    def _where(self, key: str) -> str:
        return f"{self.container_name}/{self._blob_name(key)}"

    def _blob(self, key: str) -> BlobClient:
        return self._container.get_blob_client(self._blob_name(key))

    def describe(self, prefix: str) -> str:
        return "/".join(p for p in (self.container_name, self.base, prefix.strip("/")) if p)

    # -- operations --------------------------------------------------------------------------

    def ensure_location(self) -> None:
        action = f"checking container {self.container_name}"
        try:
            self._container.get_container_properties()
            return
        except HttpResponseError as exc:
            if exc.status_code != 404:
                raise self._error(exc, action) from None
        except AzureError as exc:
            raise self._error(exc, action) from None
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass  # created meanwhile by a concurrent run: fine
        except AzureError as exc:
            raise self._error(exc, f"creating container {self.container_name}") from None

    def write(self, key: str, source: Source) -> ObjectInfo:
        with source.open() as stream:
            return self._write_stream(key, stream, source.size)

    def _write_stream(self, key: str, stream: IO[bytes], size: int) -> ObjectInfo:
        """Upload, then report the size the service verified.

        No HEAD afterwards: every byte stored went up in a request whose MD5 the service
        checked, and the commit succeeded, so the blob holds exactly the bytes sent, which
        ``_ExactLength`` guarantees are ``size`` (it fails the upload otherwise). A HEAD per
        file would double the requests for many small files.
        """
        where = self._where(key)
        source = _ExactLength(stream, size, where)
        try:
            response = self._blob(key).upload_blob(
                source,
                length=size,
                overwrite=True,
                validate_content=True,
                max_concurrency=MAX_CONCURRENCY,
            )
        except AzureError as exc:
            raise self._error(exc, f"uploading {where}") from None
        return ObjectInfo(key=key, size=source.sent, modified=response.get("last_modified"))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = (f"{self.base}/" if self.base else "") + prefix
        try:
            for props in self._container.list_blobs(
                name_starts_with=start or None, results_per_page=self.list_page_size
            ):
                yield ObjectInfo(
                    key=self._key_of(props.name), size=props.size, modified=props.last_modified
                )
        except HttpResponseError as exc:
            if exc.status_code == 404 and _code(exc) == "ContainerNotFound":
                return
            raise self._error(exc, f"listing {self.container_name}/{start}") from None
        except AzureError as exc:
            raise self._error(exc, f"listing {self.container_name}/{start}") from None

    def open_read(self, key: str) -> IO[bytes]:
        where = self._where(key)
        try:
            downloader = self._blob(key).download_blob(validate_content=True, max_concurrency=1)
        except AzureError as exc:
            raise self._error(exc, f"reading {where}", key) from None
        reader = _ChunkReader(downloader.chunks(), lambda exc: self._error(exc, f"reading {where}"))
        return io.BufferedReader(reader, buffer_size=READ_CHUNK_SIZE)

    def stat(self, key: str) -> ObjectInfo:
        try:
            props = self._blob(key).get_blob_properties()
        except AzureError as exc:
            raise self._error(exc, f"reading properties of {self._where(key)}", key) from None
        return ObjectInfo(key=key, size=props.size, modified=props.last_modified)

    def delete(self, key: str) -> None:
        try:
            self._blob(key).delete_blob(delete_snapshots="include")
        except AzureError as exc:
            raise self._error(exc, f"deleting {self._where(key)}", key) from None

    def close(self) -> None:
        self._container.close()
        self._session.close()

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: AzureError, action: str, key: str | None = None) -> DestinationError:
        """One line naming what failed; never the key, never the SDK's multi-line dump."""
        if isinstance(exc, ServiceRequestError):
            return DestinationError(
                f"cannot reach Azure Storage at {self.account_url} ({_reason(exc)}) while {action}"
            )
        if isinstance(exc, ServiceResponseError):
            return DestinationError(
                f"no complete response from Azure Storage at {self.account_url} "
                f"({_reason(exc)}) while {action}"
            )
        if isinstance(exc, HttpResponseError):
            status, code = exc.status_code, _code(exc)
            if status == 404 and code == "ContainerNotFound":
                return DestinationError(
                    f"container {self.container_name} does not exist in storage account "
                    f"{self.account} ({action})"
                )
            if status == 404 and key is not None:
                return ObjectNotFound(f"{key} not found in {self.describe('')}")
            if status == 403:
                # AuthenticationFailed is a wrong key; AuthorizationFailure may also be the
                # account's firewall (Azurite answers it for a wrong key too).
                hint = "" if code == "AuthenticationFailed" else " and the account's network rules"
                return DestinationError(
                    f"access denied by storage account {self.account} while {action} "
                    f"(HTTP 403 {code or 'Forbidden'}): check storage_access_key{hint}"
                )
            detail = _first_line(exc.message or "")
            return DestinationError(
                f"Azure Storage refused {action}: HTTP {status} {code or ''}".rstrip()
                + (f": {detail}" if detail and detail != code else "")
            )
        return DestinationError(
            f"Azure Storage error while {action}: {type(exc).__name__}: {_first_line(str(exc))}"
        )


def _version() -> str:
    try:
        return importlib.metadata.version("service-backup-azure")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _code(exc: HttpResponseError) -> str:
    """The service's error code (the storage SDK sets ``error_code``; HEADs only have a header)."""
    code = getattr(exc, "error_code", None)
    headers = getattr(exc.response, "headers", None)
    if code is None and headers is not None:
        code = headers.get("x-ms-error-code")
    return str(getattr(code, "value", code) or "")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200]


def _reason(exc: AzureError) -> str:
    """The OS-level cause (``Connection refused``, ``Name or service not known``, a timeout)."""
    text = str(exc)
    match = _ERRNO_TEXT.search(text)
    if match:
        return match.group(1).strip()
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if "reset" in lowered:
        return "connection reset"
    return type(exc).__name__


class _ExactLength(io.RawIOBase):
    """The source stream, refusing to end before ``size`` bytes.

    The SDK commits whatever blocks it read once the stream ends, so a file that shrank
    during the upload would otherwise be stored, truncated, looking complete. Raising here
    stops the upload before the commit: nothing is stored under the key.
    """

    def __init__(self, stream: IO[bytes], size: int, where: str) -> None:
        super().__init__()
        self._stream = stream
        self._left = size
        self._size = size
        self._where = where

    @property
    def sent(self) -> int:
        """Bytes handed to the SDK so far."""
        return self._size - self._left

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # Not seekable on purpose: the SDK then reads sequentially, block by block.
        return False

    def read(self, n: int = -1) -> bytes:
        """Exactly ``min(n, bytes left)`` bytes: the SDK's single Put Blob reads only once."""
        want = self._left if n is None or n < 0 else min(n, self._left)
        parts = []
        while want > 0:
            data = self._stream.read(want)
            if not data:
                raise SourceError(
                    f"source for {self._where} ended after {self._size - self._left} of "
                    f"{self._size} bytes (file shrank during the upload); nothing stored"
                )
            parts.append(data)
            self._left -= len(data)
            want -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ChunkReader(io.RawIOBase):
    """A readable stream over the downloader's chunk iterator: one range in memory at a time."""

    def __init__(self, chunks: Iterator[bytes], translate) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self._chunks = chunks
        self._translate = translate
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._current:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return 0
            except AzureError as exc:
                raise self._translate(exc) from None
            self._current = memoryview(chunk)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n
