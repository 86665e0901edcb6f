"""The ``azure`` destination: block blobs in one container, under ``path``.

Blob names are ``<path>/<key>`` (the core's ``KeyLayout``); a run's keys are
``[<deployment>/]YYYY/MM/DD/<relative path>``.

How a file is written, and why:

* The bytes come from the core's ``Source`` only, read once, in order (``read_at`` block by
  block from one thread): the ``Source`` hashes them as they go and raises ``SourceError``
  naming the file when it is short, has grown or was modified, before it hands out the last
  bytes. Reading in order keeps its hash window empty; the network, not the disk, is slow.
* Files up to ``MAX_SINGLE_PUT_SIZE`` go up as one Put Blob, sent only once all their bytes
  were read (one request per small file is what makes 5,000 small files fast). Bigger files
  are staged as blocks (Put Block), ``MAX_CONCURRENCY`` in flight, and committed by one Put
  Block List only after the last block was read and staged. A Put Blob that is never sent and
  a block list that is never committed change nothing: a short, grown or modified source, a
  failed request or an abort never replaces a good blob already stored under the key.
* Uncommitted blocks are not orphans to clean: Azure discards a blob's uncommitted blocks when
  another block list is committed for it, and otherwise after a week. Block ids carry a random
  prefix per upload, so two uploads of one key never mix blocks.
* Memory: ``MAX_CONCURRENCY`` blocks in flight plus the one being read, whatever the file size
  (~20 MiB per file with 4 MiB blocks), and ``file_concurrency`` files at once.
* Integrity: every Put Blob and Put Block carries the body's MD5 (``validate_content``); the
  service recomputes it and refuses a mismatch, so a corrupted transfer fails instead of being
  stored. A read is one streaming GET checked against the blob's stored MD5 when it has one
  (every Put Blob stores one); ``_download`` says what is checked and why.
* Retries: 5xx, 408 and throttling (503 ServerBusy, 500 OperationTimedOut) are retried with
  exponential back-off (3, 5, 9, 17 s, each +-1 s of jitter) within ``RETRY_TOTAL`` retries:
  under 40 s of waiting per request at worst. Connection failures get only ``RETRY_CONNECT``
  retries (3 + 5 s), so a closed port or an unresolvable account fails in about 8 s, not the
  SDK's default minute.
* Timeouts: ``CONNECT_TIMEOUT`` to open a connection, ``READ_TIMEOUT`` between bytes of a response.
  Neither bounds a request that trickles, so each write also runs under the core's stall rule
  (``stall_timeout_seconds``, ``stall_min_bytes_per_second``) and the shutdown event: the
  transport (``_transport.py``) counts the bytes each write sends and cuts its connections
  and back-off sleeps when the guard fires.
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import logging
import re
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient

from service_backup import tls
from service_backup.destination import (
    Destination,
    DestinationContext,
    ObjectInfo,
    common_folder,
)
from service_backup.errors import DestinationError, ObjectNotFound, one_line
from service_backup.layout import KeyLayout, MiB
from service_backup.source import Source
from service_backup.stall import StallGuard

from ._credential import CHECK, credential
from ._download import READ_PIECE, BlobRead
from ._listing import Page, list_url, parse_page
from ._transport import (
    AbortableRetry,
    AbortableTransport,
    Aborted,
    Transfer,
    ca_bundle,
    session,
)
from .config import AzureConfig, account_url

MAX_SINGLE_PUT_SIZE: Final = 4 * MiB
MAX_BLOCK_SIZE: Final = 4 * MiB
MAX_CONCURRENCY: Final = 4
#: Azure's limit of committed blocks per blob: bigger files get bigger blocks.
MAX_BLOCKS: Final = 50_000
#: Blobs up to this size are read whole when opened (one GET, checked before any byte is
#: handed out); bigger ones stream (``_download``). Also the SDK's own download sizes.
READ_WHOLE_MAX: Final = 4 * MiB

CONNECT_TIMEOUT: Final = 10
READ_TIMEOUT: Final = 60
RETRY_TOTAL: Final = 4
RETRY_CONNECT: Final = 2
LIST_PAGE_SIZE: Final = 5000  # the service's maximum

FILE_CONCURRENCY: Final = 8
#: One connection per request that can be in flight, so none is opened and thrown away.
POOL_SIZE: Final = FILE_CONCURRENCY * MAX_CONCURRENCY + 4

_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
#: A SAS refused for lacking a permission or resource type, as opposed to a bad signature.
_OUT_OF_SAS_SCOPE: Final = frozenset(
    {"AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch"}
)
#: ``RemoteDisconnected('Remote end closed ...')``, ``ConnectionResetError(104, 'Connection ...')``
_OS_ERROR_TEXT = re.compile(r"\w+(?:Error|Disconnected)\((?:-?\d+, )?'([^']+)'\)")
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


class AzureDestination(Destination):
    """Block blobs in ``container`` under ``path``."""

    #: Files uploaded at once. A small file is one round trip, so many small files are
    #: latency-bound and need requests in flight to keep the service busy; 8 is where tuned
    #: SDK clients beat rclone on Azurite, and more only queue behind the server. Memory stays
    #: bounded: at most 8 files x 4 blocks x 4 MiB of buffers, whatever the file sizes.
    file_concurrency = FILE_CONCURRENCY

    def __init__(self, config: AzureConfig, context: DestinationContext) -> None:
        quiet_sdk_logging()
        self.name = context.display_name
        self.account = config.storage_account
        self.account_url = account_url(config)
        self.container_name = config.container
        self.layout = KeyLayout(config.path)
        self.list_page_size = LIST_PAGE_SIZE
        self.credential_kind = config.credential_kind
        self.check_hint = CHECK[config.credential_kind]
        self.stall_rule = config.stall_rule
        self.stop = context.stop
        self.promote_by_copy = config.promote_by_copy
        self._sas = config.sas_token.reveal().strip().removeprefix("?")
        self._session = session(self.account_url, POOL_SIZE)
        self._credential = credential(config, connection_verify=ca_bundle())
        self.retry_policy = AbortableRetry(
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
            credential=self._credential,
            transport=AbortableTransport(
                session=self._session,
                session_owner=False,
                connection_verify=ca_bundle(),
                connection_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                # The pieces a response body is read in (azure-core's default is 4 KiB).
                connection_data_block_size=READ_PIECE,
            ),
            retry_policy=self.retry_policy,
            max_single_put_size=MAX_SINGLE_PUT_SIZE,
            max_block_size=MAX_BLOCK_SIZE,
            max_single_get_size=READ_WHOLE_MAX,
            max_chunk_get_size=READ_WHOLE_MAX,
            logging_enable=False,
            user_agent=f"service-backup-azure/{_version()}",
        )

    @property
    def container_url(self) -> str:
        """The container's URL as the SDK will address it (no request is made)."""
        return str(self._container.url)

    # -- names -------------------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"{self.container_name}/{self.layout.full(key)}"

    def _blob(self, key: str) -> BlobClient:
        return self._container.get_blob_client(self.layout.full(key))

    def describe(self, prefix: str) -> str:
        return self.layout.describe(self.container_name, prefix)

    # -- operations --------------------------------------------------------------------------

    def ensure_location(self) -> None:
        """Create the container when it is missing.

        A container SAS cannot read the container's properties (only an account SAS, a key or
        a token can), so with a SAS that is refused the check falls back to listing one blob,
        and a SAS scoped to writing only (``sp=cw``, least privilege for backups) skips the
        check: its first write reports a missing container clearly.
        """
        action = f"checking container {self.container_name}"
        try:
            self._container.get_container_properties()
            return
        except HttpResponseError as exc:
            if self.credential_kind == "sas" and _code(exc) in _OUT_OF_SAS_SCOPE:
                if self._exists_by_listing():
                    return
            elif exc.status_code != 404:
                raise self._error(exc, action) from None
        except AzureError as exc:
            raise self._error(exc, action) from None
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass  # created meanwhile by a concurrent run: fine
        except AzureError as exc:
            raise self._error(exc, f"creating container {self.container_name}") from None

    def _exists_by_listing(self) -> bool:
        """False only when the service says the container does not exist."""
        try:
            next(iter(self._container.list_blobs(results_per_page=1).by_page()), None)
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return False
            if _code(exc) in _OUT_OF_SAS_SCOPE:
                return True  # cannot tell: the first write will
            raise self._error(exc, f"listing container {self.container_name}") from None
        except AzureError as exc:
            raise self._error(exc, f"listing container {self.container_name}") from None
        return True

    def write(self, key: str, source: Source) -> ObjectInfo:
        """Store ``source`` under ``key``: one Put Blob, or blocks committed at the end.

        The whole write is watched by a ``StallGuard``: when it moves fewer bytes per second
        than ``stall_min_bytes_per_second`` for ``stall_timeout_seconds``, or service-backup
        shuts down, its in-flight requests are cut and it fails saying so; nothing was
        committed then. No HEAD afterwards: every byte stored went up in a request whose MD5
        the service checked, the ``Source`` vouched for their number before the last of them
        was handed out, and the commit succeeded; a HEAD per file would double the requests
        for many small files.
        """
        where = self._where(key)
        blob = self._blob(key)
        guard = StallGuard(f"{self.name}: uploading {where}", self.stall_rule, self.stop)
        transfer = Transfer(guard)
        try:
            with guard.watch(transfer.abort), transfer.bound():
                if source.size <= MAX_SINGLE_PUT_SIZE:
                    data = source.read_all()  # every byte read and checked before the request
                    response = blob.upload_blob(
                        data, length=len(data), overwrite=True, validate_content=True
                    )
                else:
                    response = self._put_blocks(blob, source, transfer)
        except (Aborted, DestinationError, AzureError) as exc:
            if transfer.aborted.is_set() or guard.tripped or self.stop.is_set():
                raise guard.error() from None
            if isinstance(exc, AzureError):
                raise self._error(exc, f"uploading {where}") from None
            raise
        return ObjectInfo(key=key, size=source.size, modified=response.get("last_modified"))

    def _put_blocks(self, blob: BlobClient, source: Source, transfer: Transfer) -> dict[str, Any]:
        """Stage the blocks (read in order here, sent by up to ``MAX_CONCURRENCY`` workers),
        then commit them, only once the ``Source`` handed out its last bytes without error."""
        size = source.size
        block_size = block_size_for(size)
        count = -(-size // block_size)
        prefix = uuid.uuid4().hex[:16]
        ids = [base64.b64encode(f"{prefix}-{i:08d}".encode()).decode() for i in range(count)]
        slots = threading.Semaphore(MAX_CONCURRENCY)
        failed = threading.Event()

        def stage(index: int, data: bytes) -> None:
            try:
                with transfer.bound():
                    blob.stage_block(ids[index], data, length=len(data), validate_content=True)
            except BaseException:
                failed.set()
                raise
            finally:
                slots.release()

        futures: list[Future[None]] = []
        with ThreadPoolExecutor(MAX_CONCURRENCY, thread_name_prefix="azure-block") as pool:
            for index in range(count):
                slots.acquire()
                if failed.is_set() or transfer.aborted.is_set():
                    slots.release()
                    break
                offset = index * block_size
                try:
                    data = source.read_at(offset, min(block_size, size - offset))
                except BaseException:
                    slots.release()
                    raise
                futures.append(pool.submit(stage, index, data))
                del data
        for future in futures:
            future.result()  # the first failure, in block order
        transfer.check()
        source.sha256  # noqa: B018 - every byte was read and the final check passed
        return blob.commit_block_list([BlobBlock(block_id) for block_id in ids])

    # -- promotion (promote_by_copy) ------------------------------------------------------

    @property
    def can_rename(self) -> bool:
        """``promote_by_copy``: same-day re-runs are staged, then promoted by server-side copy."""
        return self.promote_by_copy

    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """Promote staged blobs: a server-side Copy Blob of each, checked, then the staged deleted.

        The staged blobs are listed once (size, ETag, Content-MD5). Each copy is
        ``start_copy_from_url`` from the staged blob of the same account, pinned to its listed
        ETag (a staged blob replaced meanwhile is never promoted), ``FILE_CONCURRENCY`` at a
        time; a copy the service answers as pending is polled until it succeeded (within one
        account it rarely is). A second listing compares every promoted blob's size, and its
        Content-MD5 where the staged blob had one, with the staged blob's; then the staged
        blobs are deleted. With a SAS token the source URL carries it (Azure authorizes the
        source of a copy by its URL); that URL is never logged nor put in an error.
        """
        if not moves:
            return
        fulls = [(self.layout.full(old), self.layout.full(new)) for old, new in moves]
        staged = self._listed(common_folder(old for old, _ in fulls))
        for old, _ in fulls:
            if old not in staged:
                raise ObjectNotFound(f"{self.container_name}/{old} not found")
        folder = common_folder(new for _, new in fulls)
        where = f"{self.container_name}/{folder}"
        guard = StallGuard(
            f"{self.name}: promotion of {len(fulls)} staged blobs to {where}",
            self.stall_rule,
            self.stop,
        )
        transfer = Transfer(guard)

        def copy(old: str, new: str) -> None:
            with transfer.bound():
                self._copy(old, new, staged[old], transfer)

        def delete(old: str) -> None:
            with transfer.bound():
                self._container.delete_blob(old, delete_snapshots="include")

        try:
            with guard.watch(transfer.abort):
                self._each(copy, fulls, transfer)
                self._check_copies(fulls, staged, folder)
                self._each(delete, [(old,) for old, _ in fulls], transfer)
        except (Aborted, DestinationError, AzureError) as exc:
            if transfer.aborted.is_set() or guard.tripped or self.stop.is_set():
                raise guard.error() from None
            if isinstance(exc, AzureError):
                raise self._error(exc, f"promoting staged blobs to {where}") from None
            raise

    def _each(self, call: Any, jobs: Sequence[tuple[str, ...]], transfer: Transfer) -> None:
        """``call(*job)`` for every job, ``FILE_CONCURRENCY`` at a time; the first error."""
        with ThreadPoolExecutor(FILE_CONCURRENCY, thread_name_prefix="azure-promote") as pool:
            futures = [pool.submit(call, *job) for job in jobs]
            try:
                for future in futures:
                    future.result()
                    # One second at the floor per request done: promoting many small or
                    # empty blobs sends few bytes, but it is no stall.
                    transfer.guard.progress(int(self.stall_rule.floor))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _copy(self, old: str, new: str, found: Any, transfer: Transfer) -> None:
        source = self._container.get_blob_client(old).url
        if self.credential_kind == "sas":
            source = f"{source}?{self._sas}"
        target = self._container.get_blob_client(new)
        answer = target.start_copy_from_url(
            source, source_etag=found.etag, source_match_condition=MatchConditions.IfNotModified
        )
        status, delay = str(answer.get("copy_status") or ""), 0.1
        while status == "pending":
            transfer.check()
            if self.stop.wait(delay):
                transfer.check()
                raise Aborted()
            delay = min(delay * 2, 2.0)
            copied = target.get_blob_properties().copy
            status = str(copied.status or "")
            if copied.progress:  # "bytes copied/total": progress for the stall guard
                done, _, _ = str(copied.progress).partition("/")
                transfer.guard.progress(int(done or 0))
        if status != "success":
            raise DestinationError(
                f"copy of {self.container_name}/{old} to {new} ended {status or 'without status'}"
            )

    def _check_copies(
        self, fulls: Sequence[tuple[str, str]], staged: dict[str, Any], folder: str
    ) -> None:
        promoted = self._listed(folder)
        for old, new in fulls:
            found, copy = staged[old], promoted.get(new)
            if copy is None or copy.size != found.size:
                size = "missing" if copy is None else f"{copy.size} bytes"
                raise DestinationError(
                    f"promoted copy of {self.container_name}/{old} is {size}, "
                    f"the staged blob has {found.size} bytes"
                )
            want = found.content_settings.content_md5
            if want and bytes(copy.content_settings.content_md5 or b"") != bytes(want):
                raise DestinationError(
                    f"promoted copy {self.container_name}/{new} has another Content-MD5 "
                    "than the staged blob: the copy differs"
                )

    def _listed(self, start: str) -> dict[str, Any]:
        """Every blob whose name starts with ``start`` (a full name prefix), by name."""
        return {
            props.name: props
            for props in self._container.list_blobs(
                name_starts_with=start or None, results_per_page=self.list_page_size
            )
        }

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """List Blobs pages parsed for the three fields needed (``_listing``)."""
        for page in self._pages(self.layout.full_prefix(prefix)):
            for blob in page.blobs:
                yield ObjectInfo(
                    key=self.layout.key_of(blob.name), size=blob.size, modified=blob.modified
                )

    def list_folders(self, prefix: str) -> Iterator[str]:
        """One List Blobs with ``delimiter=/``: the folders' names without their blobs."""
        start = self.layout.full_prefix(prefix)
        for page in self._pages(start, delimiter="/"):
            for folder in page.prefixes:
                name = folder[len(start) :].removesuffix("/")
                if name:
                    yield name

    def _pages(self, start: str, delimiter: str = "") -> Iterator[Page]:
        what = f"listing {self.container_name}/{start}"
        marker = ""
        while True:
            url = list_url(self.container_url, start, self.list_page_size, marker, delimiter)
            try:
                response = self.pipeline_run(
                    HttpRequest("GET", url, headers={"x-ms-version": self.api_version})
                )
                body = response.read()
                if response.status_code == 404 and (
                    response.headers.get("x-ms-error-code") == "ContainerNotFound"
                ):
                    return
                if response.status_code != 200:
                    raise HttpResponseError(response=response)
            except AzureError as exc:
                raise self._error(exc, what) from None
            try:
                page = parse_page(body)
            except (ElementTree.ParseError, ValueError) as exc:
                raise DestinationError(
                    f"Azure Storage answered {what} with an unreadable page: {one_line(exc, 200)}"
                ) from None
            yield page
            if not page.next_marker:
                return
            marker = page.next_marker

    def open_read(self, key: str) -> IO[bytes]:
        """One streaming GET, checked and resumed where it broke (``_download``).

        A blob read whole on opening (up to ``READ_WHOLE_MAX``) is handed out as a ``BytesIO``
        over its checked bytes (no copy, no read buffer to allocate); a bigger one as the raw
        ``BlobRead``, whose ``read`` hands out the transport's pieces uncopied.
        """
        read = BlobRead(self, key, READ_WHOLE_MAX)
        if read.whole is not None:
            read.close()
            return io.BytesIO(read.whole)
        return read  # type: ignore[return-value]

    # -- what _download needs from the container client ------------------------------------

    def blob_url(self, name: str) -> str:
        """A blob's URL, as ``get_blob_client(name).url`` spells it, without building one."""
        base, sep, query = self.container_url.partition("?")
        return f"{base}/{urllib.parse.quote(name, safe='~/')}" + (f"?{query}" if sep else "")

    @property
    def api_version(self) -> str:
        return str(self._container.api_version)

    def pipeline_run(self, request: Any) -> Any:
        """``request`` through the container client's pipeline (credential, retries, transport).

        ``stream=True``: the body is read by the caller (the SDK's content decoding would try
        to read blob bytes as text). ``_pipeline`` is private (the storage clients have no
        public ``send_request``): this is the one place it is used, azure-storage-blob is
        pinned to the minor version tested, and tests/azure/test_sdk_private_api.py fails
        first when it moves.
        """
        return self._container._pipeline.run(request, stream=True).http_response

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
        closer = getattr(self._credential, "close", None)
        if callable(closer):
            closer()  # DefaultAzureCredential's own HTTP pipelines

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: AzureError, action: str, key: str | None = None) -> DestinationError:
        """One line naming what failed; never the key, never the SDK's multi-line dump."""
        untrusted = tls.untrusted_reason(exc)
        if untrusted is not None:
            return DestinationError(tls.untrusted_message(self.account_url, untrusted, action))
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
            if status in (401, 403):
                # AuthenticationFailed is a wrong key, SAS or token; *PermissionMismatch a SAS
                # or role without the right; AuthorizationFailure may also be the account's
                # firewall (Azurite answers it for a wrong key too).
                firewall = code in ("AuthorizationFailure", "")
                hint = " and the account's network rules" if firewall else ""
                return DestinationError(
                    f"access denied by storage account {self.account} while {action} "
                    f"(HTTP {status} {code or 'Forbidden'}): check {self.check_hint}{hint}"
                )
            detail = one_line((exc.message or "").strip().partition("\n")[0], 200)
            return DestinationError(
                f"Azure Storage refused {action}: HTTP {status} {code or ''}".rstrip()
                + (f": {detail}" if detail and detail != code else "")
            )
        return DestinationError(
            f"Azure Storage error while {action}: {type(exc).__name__}: {one_line(exc, 200)}"
        )


def block_size_for(size: int) -> int:
    """``MAX_BLOCK_SIZE``, or the whole MiB that keeps a huge file within ``MAX_BLOCKS``."""
    needed = -(-size // MAX_BLOCKS)
    return max(MAX_BLOCK_SIZE, -(-needed // MiB) * MiB)


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


def _reason(exc: AzureError) -> str:
    """The OS-level cause (``Connection refused``, ``Name or service not known``, a timeout)."""
    text = str(exc)
    match = _ERRNO_TEXT.search(text)
    if match:
        return match.group(1).strip()
    match = _OS_ERROR_TEXT.search(text)
    if match:
        return match.group(1).strip()
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if "reset" in lowered:
        return "connection reset"
    return type(exc).__name__
