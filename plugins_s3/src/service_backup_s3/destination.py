"""The ``s3`` destination: AWS S3 and S3-compatible stores through boto3.

Two upload paths, chosen by size:

* below ``MULTIPART_THRESHOLD`` one ``PutObject`` from the calling thread, the body read into
  memory (bounded by the threshold) so that its checksum goes along (``_checksums``: MD5 or
  CRC32C, which the server verifies) and what the store answers is checked (catching a store
  that does not verify). No HEAD follows: on a server that spends milliseconds per request
  an extra HEAD halves small-file throughput, and the seed's IAM policy does not grant
  ``s3:GetObject`` anyway;
* from the threshold up, s3transfer's managed multipart upload (``PART_CONCURRENCY`` parts in
  flight, shared by all threads of the destination). Each part is read from the file once,
  whole, through the Source, and sent from that buffer (``_parts``) with its checksum, which
  S3 verifies and the answer to which is checked as for the PUT: memory is one part per part
  in flight whatever the file size. Parts are read roughly in file order, so that the Source
  hashes them without holding many back. A failed transfer aborts its multipart upload, so
  nothing complete-looking is left behind.

Either way every byte is read once through the core's ``Source``, which raises
``SourceError`` before the last bytes when the file is short, grew or changed: the PUT is then
never sent, and the multipart upload is never completed.

Every transfer runs under the core's stall rule: when it stalls, or service-backup shuts down,
the client's connections are shut down (``_sockets``) and every later request is refused
before it is sent; a failed multipart upload is then aborted by a separate cleanup client,
and what could not be aborted is swept at the start of a later run (``ensure_location``).
Credentials: static keys, else boto3's default chain, optionally a role assumed through STS.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import functools
import importlib.metadata
import io
import platform
import re
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any, cast

import boto3
from botocore.config import Config as BotoConfig
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError
from botocore.response import StreamingBody
from botocore.utils import parse_timestamp
from loguru import logger
from s3transfer.subscribers import BaseSubscriber

from service_backup.destination import (
    Destination,
    DestinationContext,
    ObjectInfo,
    common_folder,
)
from service_backup.errors import BackupError, DestinationError, ObjectNotFound, SourceError
from service_backup.layout import KeyLayout, MiB
from service_backup.raw_read import RawRead
from service_backup.source import Source
from service_backup.stall import StallGuard

from . import _errors
from ._checksums import Sent
from ._parts import PartChecked, PartIntegrity, ReadAhead, SourceNames
from ._sockets import Sockets
from ._tls import CaBundle
from .config import S3Config

#: Files uploaded at once. Many small files are bound by the server's per-request latency,
#: not bandwidth; ~8 requests in flight keep moto and S3 busy without oversubscribing a small
#: VM (measured: 8 beats 4 and matches 16 on 5,000 small files).
FILE_CONCURRENCY = 8
#: Size from which a file goes up in parts. Below it the body is held in memory once, so the
#: worst case for small files is FILE_CONCURRENCY * MULTIPART_THRESHOLD.
MULTIPART_THRESHOLD = 8 * MiB
#: Part size: s3transfer's default; it grows it for files that would need over 10,000 parts.
PART_SIZE = 8 * MiB
#: How many parts the reads of a file may run ahead of its first unread byte
#: (``_parts.ReadAhead``): parts the Source may hold to hash in order, beside the parts in
#: flight. Two let the next part be read while the one before it waits for a thread.
READ_AHEAD_PARTS = 2
#: Parts uploaded at once, across all big files of the destination. Each holds its part in
#: memory until sent (plus up to ``READ_AHEAD_PARTS`` waiting for the Source's hash), so this
#: sets the peak memory of a big upload: 6 keeps a 1 GiB upload's whole process at 108-116 MiB
#: (8 gave 124-133 MiB, target 150) for the same CPU. On loopback moto 4 and 8 are equally
#: fast (the server is the bottleneck); over a real network each connection is latency-bound.
PART_CONCURRENCY = 6
#: A dead endpoint fails a connection in seconds. A black-holed or trickling one is the stall
#: rule's (``stall_timeout_seconds``): it breaks the connections of a transfer that moves too
#: little, and of every transfer once service-backup shuts down.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
#: Aborting a failed multipart upload gets at most this (or one stall period, if shorter)
#: per attempt, two attempts: the failure it follows may be the endpoint itself.
CLEANUP_TIMEOUT = 10
#: Incomplete multipart uploads under the base older than this are this tool's leftovers (a
#: killed run, an abort that could not reach the store): ``ensure_location`` aborts them.
#: No run of ours keeps an upload open that long.
ORPHAN_AGE = datetime.timedelta(hours=24)
#: What keys a run writes look like below the base: ``[<deployment>/]YYYY/MM/DD/<path>``.
RUN_KEY = re.compile(r"(^|/)\d{4}/\d{2}/\d{2}/")
#: botocore "standard" retries: throttling, 5xx and connection errors, exponential back-off
#: with jitter; 4 attempts wait at most about 7 s in total.
MAX_ATTEMPTS = 4
#: What one read of an object's body asks for when the caller asks for everything.
READ_SIZE = 1 * MiB
#: Default MaxKeys of a listing page (S3's maximum).
LIST_PAGE_SIZE = 1000
#: Keys per DeleteObjects request when staged objects are removed (S3's maximum).
DELETE_BATCH = 1000


class S3Destination(Destination):
    """A bucket and a path in it; keys become ``<bucket_path>/<key>``."""

    file_concurrency = FILE_CONCURRENCY

    def __init__(self, config: S3Config, context: DestinationContext) -> None:
        self.config = config
        self.name = context.display_name
        self.stop = context.stop
        self.bucket = config.bucket_name.strip()
        self.layout = KeyLayout(config.base_path)
        self.list_page_size = LIST_PAGE_SIZE
        self.orphan_age = ORPHAN_AGE
        self._transfer: Any = None
        self._transfer_lock = threading.Lock()
        self._names = SourceNames(PART_SIZE, READ_AHEAD_PARTS)
        #: Set once a stall or shutdown broke the connections: every later request fails
        #: with it before it is sent (botocore would otherwise retry into the same hole).
        self._broken: DestinationError | None = None
        self._sockets = Sockets()
        #: Multipart uploads in progress, by key: what to abort when a transfer fails.
        self._uploads: dict[str, str] = {}
        self._cleanup: Any = None
        self._bundle = CaBundle(config.ca_cert)
        try:
            self._session = _make_session(config)
            self.client = _make_client(self._session, config, self._bundle.path)
        except (BotoCoreError, ValueError) as exc:
            self._bundle.close()
            raise DestinationError(
                f"cannot set up the S3 client for bucket {self.bucket}: {_errors.reason(exc)}"
            ) from None
        self._sockets.track(self.client)
        events = self.client.meta.events
        events.register("before-send.s3", self._refuse_when_broken)
        events.register("after-call.s3.CreateMultipartUpload", self._remember_upload)
        events.register(
            "before-parameter-build.s3.UploadPart", PartIntegrity(config.effective_upload_checksum)
        )
        kms = config.server_side_encryption.startswith("aws:kms")
        events.register("after-call.s3.UploadPart", PartChecked(kms))

    # -- stalls, shutdown, leftovers ------------------------------------------------------

    @contextlib.contextmanager
    def _watched(self, what: str) -> Iterator[StallGuard]:
        """Apply the stall rule (and shutdown) to what runs inside; ``what`` names it."""
        guard = StallGuard(f"{self.name}: {what}", self.config.stall_rule, self.stop)
        with guard.watch(functools.partial(self._break, guard)):
            yield guard

    def _break(self, guard: StallGuard) -> None:
        """The guard's abort: fail every further request, wake the threads blocked in reads."""
        if self._broken is None:
            self._broken = guard.error()
        self._sockets.break_all()

    def _refuse_when_broken(self, **_: Any) -> None:
        if self._broken is not None:
            raise self._broken

    def _remember_upload(self, parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("Key") and parsed.get("UploadId"):
            self._uploads[str(parsed["Key"])] = str(parsed["UploadId"])

    def _cleanup_client(self) -> Any:
        """A client of its own for aborting uploads, with short timeouts and two attempts.

        It is not broken with the main one: a stalled or interrupted transfer still gets its
        multipart upload aborted if the store answers at all.
        """
        with self._transfer_lock:
            if self._cleanup is None:
                timeout = min(CLEANUP_TIMEOUT, self.config.stall_rule.period)
                self._cleanup = _make_client(
                    self._session, self.config, self._bundle.path, timeout=timeout, attempts=2
                )
            return self._cleanup

    def _abort_upload(self, full: str) -> None:
        """Abort the multipart upload of ``full`` that failed, if s3transfer has not yet."""
        upload_id = self._uploads.pop(full, None)
        if upload_id is None:
            return
        try:
            self._cleanup_client().abort_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id
            )
        except ClientError as exc:
            if _errors.error_code(exc) not in ("NoSuchUpload", "404"):
                self._left_behind(full, exc)
        except BotoCoreError as exc:
            self._left_behind(full, exc)

    def _left_behind(self, full: str, exc: BaseException) -> None:
        logger.warning(
            f"{self.name}: could not abort the incomplete upload of {self.bucket}/{full} "
            f"({_errors.reason(exc)}); a run after {self.orphan_age} removes it"
        )

    def _sweep_orphans(self) -> None:
        """Abort this tool's incomplete multipart uploads older than ``orphan_age``.

        Only under the base, only keys shaped like a run's, only old ones: a run in progress
        elsewhere (another VM, the same day) is never touched. Never fails the run.
        """
        prefix = self.layout.full_prefix("")
        cutoff = datetime.datetime.now(datetime.UTC) - self.orphan_age
        try:
            with self._watched(f"listing incomplete uploads in {self.bucket}"):
                pages = self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
                stale = [
                    (u["Key"], u["UploadId"])
                    for page in pages
                    for u in page.get("Uploads", ())
                    if u["Initiated"] <= cutoff and RUN_KEY.search(self.layout.key_of(u["Key"]))
                ]
        except (BotoCoreError, ClientError, DestinationError) as exc:
            logger.warning(
                f"{self.name}: cannot list incomplete uploads in {self.bucket}/{prefix} "
                f"({_errors.reason(exc)}); leftovers of failed runs stay"
            )
            return
        for full, upload_id in stale:
            self._uploads[full] = upload_id
            self._abort_upload(full)

    # -- naming -------------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"{self.bucket}/{self.layout.full(key)}"

    def describe(self, prefix: str) -> str:
        return self.layout.describe(self.bucket, prefix)

    def _fail(self, doing: str, exc: BaseException) -> DestinationError:
        return DestinationError(f"{doing}: {_errors.reason(exc)}")

    # -- bucket -------------------------------------------------------------------------

    def ensure_location(self) -> None:
        """Create the bucket unless it exists, then abort leftovers of earlier failed runs."""
        with self._watched(f"checking bucket {self.bucket}") as guard:
            try:
                self._ensure_bucket()
            except DestinationError:
                if guard.tripped or self.stop.is_set():
                    raise guard.error() from None
                raise
        self._sweep_orphans()

    def _ensure_bucket(self) -> None:
        """Create the bucket unless it exists; tell "missing" from "refused".

        The existence check is a one-key ListObjectsV2 rather than HeadBucket: it needs the
        same permission on AWS (``s3:ListBucket``, which the seed's IAM policy grants), and
        its error body carries a code (``NoSuchBucket``, ``AccessDenied``,
        ``SignatureDoesNotMatch`` ...) where a HEAD answers a bare 403 or 404.
        """
        try:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
            return
        except ClientError as exc:
            code = _errors.error_code(exc)
            if code in _errors.BAD_CREDENTIAL_CODES:
                raise self._fail(f"credentials refused for bucket {self.bucket}", exc) from None
            if code in _errors.ACCESS_DENIED_CODES:
                raise self._fail(
                    f"access denied to bucket {self.bucket} (it belongs to another account, "
                    "or the credentials lack s3:ListBucket on it)",
                    exc,
                ) from None
            if not _errors.is_not_found(exc):
                raise self._fail(f"cannot check bucket {self.bucket}", exc) from None
        except BotoCoreError as exc:
            raise self._fail(f"cannot check bucket {self.bucket}", exc) from None
        self._create_bucket()

    def _create_bucket(self) -> None:
        region = self.config.region.strip()
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            # us-east-1 is the default location and AWS rejects it as a LocationConstraint.
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if _errors.error_code(exc) == "BucketAlreadyOwnedByYou":
                return  # created meanwhile by another run or VM
            raise self._fail(f"error in create bucket {self.bucket}", exc) from None
        except BotoCoreError as exc:
            raise self._fail(f"error in create bucket {self.bucket}", exc) from None

    # -- write --------------------------------------------------------------------------

    def _extra_args(self) -> dict[str, str]:
        cfg = self.config
        extra: dict[str, str] = {}
        if cfg.storage_class.strip():
            extra["StorageClass"] = cfg.storage_class.strip()
        if cfg.server_side_encryption:
            extra["ServerSideEncryption"] = cfg.server_side_encryption
            if cfg.sse_kms_key_id.strip() and cfg.server_side_encryption.startswith("aws:kms"):
                extra["SSEKMSKeyId"] = cfg.sse_kms_key_id.strip()
        return extra

    def write(self, key: str, source: Source) -> ObjectInfo:
        full = self.layout.full(key)
        where = f"{self.bucket}/{full}"
        with self._watched(f"upload of {where}") as guard:
            try:
                if source.size < MULTIPART_THRESHOLD:
                    self._put(full, source.read_all(), guard)
                else:
                    with self._names.register(source) as (name, ahead):
                        self._upload(name, full, ahead, guard)
            except SourceError:
                raise  # the core blames the file (short, grown, modified)
            except Exception as exc:
                if guard.tripped or self.stop.is_set():
                    raise guard.error() from None  # stalled, or shutting down
                if isinstance(exc, DestinationError):  # an integrity check, a broken client
                    raise DestinationError(f"cannot upload {where}: {exc}") from None
                raise self._fail(f"cannot upload {where}", exc) from None  # botocore, s3transfer
        # Every byte went through the Source (it raises otherwise) and S3 accepted them all.
        return ObjectInfo(key=key, size=source.size)

    def _put(self, full: str, body: bytes, guard: StallGuard) -> None:
        sent = Sent.for_body([body], self.config.effective_upload_checksum)
        response = self.client.put_object(
            Bucket=self.bucket,
            Key=full,
            Body=_Counted(body, guard),
            **sent.params(),
            **self._extra_args(),
        )
        kms = self.config.server_side_encryption.startswith("aws:kms")
        problem = sent.problem(response, kms)
        if problem:
            # The store kept something else than what was sent: do not leave it looking
            # like a good backup.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.delete_object(Bucket=self.bucket, Key=full)
            raise DestinationError(f"integrity check failed: {problem}; the object was removed")

    def _upload(self, name: str, full: str, ahead: ReadAhead, guard: StallGuard) -> None:
        """s3transfer's managed multipart upload of a registered ``Source``.

        On failure s3transfer aborts the multipart upload itself; when it could not (the
        client was broken by the stall rule, the request failed), the cleanup client tries.
        """
        extra = self._extra_args()
        if self.config.effective_upload_checksum == "crc32c":
            # Declared at CreateMultipartUpload (S3 refuses parts with another checksum);
            # s3transfer then lists each part's CRC32C, as S3 answered it, at completion.
            extra["ChecksumAlgorithm"] = "CRC32C"
        future = self._transfer_manager().upload(
            name, self.bucket, full, extra_args=extra, subscribers=[_Progress(guard)]
        )
        ahead.failed = future.done
        try:
            future.result()
        except BaseException:
            future.cancel()
            self._abort_upload(full)
            raise
        finally:
            self._uploads.pop(full, None)

    def _transfer_manager(self) -> Any:
        with self._transfer_lock:
            if self._transfer is None:
                from s3transfer.manager import TransferConfig, TransferManager

                self._transfer = TransferManager(
                    self.client,
                    TransferConfig(
                        multipart_threshold=MULTIPART_THRESHOLD,
                        multipart_chunksize=PART_SIZE,
                        max_request_concurrency=PART_CONCURRENCY,
                        max_submission_concurrency=2,
                    ),
                    osutil=self._names,
                )
            return self._transfer

    # -- promotion (promote_by_copy) ---------------------------------------------------

    @property
    def can_rename(self) -> bool:
        """``promote_by_copy``: same-day re-runs are staged, then promoted by server-side copy."""
        return self.config.promote_by_copy

    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """Promote staged objects: server-side copy of each, checked, then the staged deleted.

        The staged objects are listed first (key, size, ETag: one request per 1,000), so no
        HEAD per object is needed. Each copy goes through s3transfer's managed copy with the
        configuration of the uploads: CopyObject below ``MULTIPART_THRESHOLD``, UploadPartCopy
        of ``PART_SIZE`` parts from there (required above 5 GiB, and what aws-cli does), with
        the destination's storage class and server-side encryption, and
        ``CopySourceIfMatch`` the listed ETag (a staged object replaced meanwhile is never
        promoted). The copies therefore have the staged objects' part layout, and so their
        ETag: a second listing compares size and ETag of every promoted object with its
        staged one (ETags under SSE-KMS are not MD5s, only sizes are compared there). The
        staged objects are then deleted in batches of 1,000 (DeleteObjects).
        """
        if not moves:
            return
        fulls = [(self.layout.full(old), self.layout.full(new)) for old, new in moves]
        staged = self._listed(common_folder(old for old, _ in fulls))
        jobs: list[tuple[str, str, dict[str, Any]]] = []
        for old, new in fulls:
            found = staged.get(old)
            if found is None:
                raise ObjectNotFound(f"{self.bucket}/{old} not found")
            jobs.append((old, new, found))
        folder = common_folder(new for _, new in fulls)
        where = f"{self.bucket}/{folder}"
        with self._watched(f"promotion of {len(jobs)} staged objects to {where}") as guard:
            try:
                self._copy_all(jobs, guard)
            except Exception as exc:
                if guard.tripped or self.stop.is_set():
                    raise guard.error() from None
                if isinstance(exc, BackupError):
                    raise
                raise self._fail(f"cannot promote staged objects to {where}", exc) from None
        self._check_copies(jobs, folder)
        self._delete_many([old for old, _, _ in jobs])

    def _copy_all(self, jobs: list[tuple[str, str, dict[str, Any]]], guard: StallGuard) -> None:
        manager = self._transfer_manager()
        # A completed copy also counts as one second at the floor: promoting many empty
        # files moves no bytes, but it is no stall.
        credit = _Done(guard, int(self.config.stall_rule.floor))
        futures = []
        for old, new, found in jobs:
            extra = {**self._extra_args(), "CopySourceIfMatch": str(found["ETag"])}
            futures.append(
                (
                    new,
                    manager.copy(
                        {"Bucket": self.bucket, "Key": old},
                        self.bucket,
                        new,
                        extra_args=extra,
                        subscribers=[_KnownSize(int(found["Size"])), _Progress(guard), credit],
                    ),
                )
            )
        failed: BaseException | None = None
        for new, future in futures:
            try:
                future.result()
            except BaseException as exc:
                self._abort_upload(new)
                if failed is None:
                    failed = exc
                    for _, other in futures:
                        other.cancel()
            finally:
                self._uploads.pop(new, None)
        if failed is not None:
            raise failed

    def _check_copies(self, jobs: list[tuple[str, str, dict[str, Any]]], folder: str) -> None:
        promoted = self._listed(folder)
        kms = self.config.server_side_encryption.startswith("aws:kms")
        for old, new, found in jobs:
            copy = promoted.get(new)
            if copy is None or int(copy["Size"]) != int(found["Size"]):
                size = "missing" if copy is None else f"{copy['Size']} bytes"
                raise DestinationError(
                    f"promoted copy of {self.bucket}/{old} is {size}, "
                    f"the staged object has {found['Size']} bytes"
                )
            if not kms and _etag(copy) != _etag(found):
                raise DestinationError(
                    f"promoted copy {self.bucket}/{new} has ETag {_etag(copy)}, "
                    f"the staged object {_etag(found)}: the copy differs"
                )

    def _delete_many(self, fulls: list[str]) -> None:
        for start in range(0, len(fulls), DELETE_BATCH):
            batch = fulls[start : start + DELETE_BATCH]
            with self._watched(f"removing {len(batch)} staged objects") as guard:
                try:
                    response = self.client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                    )
                except (ClientError, BotoCoreError) as exc:
                    if guard.tripped or self.stop.is_set():
                        raise guard.error() from None
                    doing = f"cannot remove staged objects in {self.bucket}"
                    raise self._fail(doing, exc) from None
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise DestinationError(
                    f"cannot remove {len(errors)} staged objects in {self.bucket} (first: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')})".rstrip()
                    + ")"
                )

    def _listed(self, full_prefix: str) -> dict[str, dict[str, Any]]:
        """Every object under ``full_prefix`` (a full key prefix), by full key."""
        return {
            obj["Key"]: obj for page in self._pages(full_prefix) for obj in page.get("Contents", ())
        }

    # -- read side ----------------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for page in self._pages(self.layout.full_prefix(prefix)):
            for obj in page.get("Contents", ()):
                yield ObjectInfo(
                    key=self.layout.key_of(obj["Key"]),
                    size=int(obj["Size"]),
                    modified=obj.get("LastModified"),
                )

    def list_folders(self, prefix: str) -> Iterator[str]:
        """One ``Delimiter="/"`` listing: the folders' names without their objects."""
        full_prefix = self.layout.full_prefix(prefix)
        for page in self._pages(full_prefix, delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                name = common["Prefix"][len(full_prefix) :].removesuffix("/")
                if name:
                    yield name

    def _pages(self, full_prefix: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": full_prefix,
                "MaxKeys": self.list_page_size,
            }
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = self.client.list_objects_v2(**kwargs)
            except ClientError as exc:
                if _errors.error_code(exc) == "NoSuchBucket":
                    return
                raise self._fail(f"cannot list {self.bucket}/{full_prefix}", exc) from None
            except BotoCoreError as exc:
                raise self._fail(f"cannot list {self.bucket}/{full_prefix}", exc) from None
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def open_read(self, key: str) -> IO[bytes]:
        """The object's body as an unbuffered stream (``_Body``): each ``read`` is one read of
        botocore's body, and asks it for no more than is left.

        A restore opens one object per file, mostly small ones, and reads each with 1 MiB
        reads: a buffer in between only added a copy and a layer of calls per object.
        botocore checks the object's stored checksum as its ``response_checksum_validation``
        says (by default on AWS whenever S3 stored one it can compute; never with
        ``endpoint_url`` unless asked); the core checks every restored file's size and sha256
        against the manifest whatever the store does.
        """
        where = self._where(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.layout.full(key))
        except ClientError as exc:
            if _errors.is_not_found(exc):
                raise ObjectNotFound(f"{where} not found") from None
            raise self._fail(f"cannot read {where}", exc) from None
        except BotoCoreError as exc:
            raise self._fail(f"cannot read {where}", exc) from None
        # No Content-Length (a chunked answer from some S3-compatible store): read to the end.
        size = int(response["ContentLength"]) if "ContentLength" in response else None
        return cast(IO[bytes], _Body(response["Body"], where, size))

    def stat(self, key: str) -> ObjectInfo:
        where = self._where(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.layout.full(key))
        except ClientError as exc:
            if _errors.is_not_found(exc):
                raise ObjectNotFound(f"{where} not found") from None
            raise self._fail(f"cannot stat {where}", exc) from None
        except BotoCoreError as exc:
            raise self._fail(f"cannot stat {where}", exc) from None
        return ObjectInfo(
            key=key, size=int(head["ContentLength"]), modified=head.get("LastModified")
        )

    def delete(self, key: str) -> None:
        # S3's DeleteObject succeeds for an absent key; the interface wants ObjectNotFound.
        self.stat(key)
        where = self._where(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.layout.full(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"cannot delete {where}", exc) from None

    def close(self) -> None:
        with self._transfer_lock:
            transfer, self._transfer = self._transfer, None
        if transfer is not None:
            transfer.shutdown()
        self._names.close()
        self.client.close()
        if self._cleanup is not None:
            self._cleanup.close()
        self._bundle.close()


def _make_session(config: S3Config) -> Any:
    """The boto3 session: static keys, else boto3's default chain; then the role, if any."""
    import botocore.session

    base = botocore.session.Session()
    base.set_config_variable("region", config.effective_region)
    if config.static_keys:
        base.set_credentials(
            config.access_key_id.reveal().strip(), config.secret_access_key.reveal().strip()
        )
    _fast_timestamps(base)
    if not config.role_arn.strip():
        return boto3.session.Session(botocore_session=base)
    role = botocore.session.Session()
    _fast_timestamps(role)
    role.set_config_variable("region", config.effective_region)
    role.get_component("credential_provider").insert_before("env", _AssumedRole(base, config))
    return boto3.session.Session(botocore_session=role)


def _fast_timestamps(session: Any) -> None:
    """Parse S3's timestamps without dateutil, for the clients this session makes.

    Every GetObject (one per restored file) and every listed object carries one; botocore
    hands them to ``dateutil``'s general parser, which took about 7 % of the client's CPU
    per small object restored. S3 sends exactly two forms: RFC 7231 dates in headers and
    ISO 8601 in XML; anything else still goes to botocore's parser.
    """
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=_parse_timestamp)


def _parse_timestamp(value: Any) -> Any:
    if isinstance(value, str):
        try:
            if value.endswith("GMT"):
                return email.utils.parsedate_to_datetime(value)
            parsed = datetime.datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed
        except (ValueError, TypeError, IndexError):
            pass
    return parse_timestamp(value)


class _AssumedRole(CredentialProvider):  # type: ignore[misc]
    """``role_arn``: STS AssumeRole with the base session's credentials, refreshed before expiry.

    STS is reached where boto3 would reach it (the regional endpoint, or
    ``AWS_ENDPOINT_URL_STS``), never at ``endpoint_url``, which is the object store's.
    """

    METHOD = "service-backup-assume-role"

    def __init__(self, base: Any, config: S3Config) -> None:
        super().__init__()
        self._base = base
        self._role_arn = config.role_arn.strip()
        self._extra: dict[str, str] = {
            "RoleSessionName": config.role_session_name.strip() or "service-backup"
        }
        if config.external_id.strip():
            self._extra["ExternalId"] = config.external_id.strip()

    def load(self) -> Any:
        source = self._base.get_credentials()
        if source is None:
            raise DestinationError(
                f"cannot assume role {self._role_arn}: no base credentials (no access key in "
                "the config, none found by boto3's default chain)"
            )
        fetcher = AssumeRoleCredentialFetcher(
            self._base.create_client, source, self._role_arn, extra_args=dict(self._extra)
        )

        def fetch() -> Any:
            try:
                return fetcher.fetch_credentials()
            except (BotoCoreError, ClientError) as exc:
                raise DestinationError(
                    f"cannot assume role {self._role_arn}: {_errors.reason(exc)}"
                ) from None

        return DeferredRefreshableCredentials(refresh_using=fetch, method=self.METHOD)


def _make_client(
    session: Any,
    config: S3Config,
    ca_bundle: str,
    *,
    timeout: float = READ_TIMEOUT,
    attempts: int = MAX_ATTEMPTS,
) -> Any:
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url.strip() or None,
        verify=ca_bundle,
        config=BotoConfig(
            signature_version="s3v4",
            connect_timeout=min(CONNECT_TIMEOUT, timeout),
            read_timeout=timeout,
            retries={"mode": "standard", "total_max_attempts": attempts},
            max_pool_connections=FILE_CONCURRENCY + PART_CONCURRENCY + 2,
            request_checksum_calculation=config.checksum_setting(
                config.request_checksum_calculation
            ),
            response_checksum_validation=config.checksum_setting(
                config.response_checksum_validation
            ),
            s3={"addressing_style": config.effective_addressing_style},
            tcp_keepalive=True,
            user_agent=user_agent(),
            # The manifest says where backups go, not AWS_ENDPOINT_URL in some environment.
            ignore_configured_endpoint_urls=True,
        ),
    )


@functools.cache
def user_agent() -> str:
    """The ``User-Agent`` of every request: this plugin and its version first, then boto3's.

    It names service-backup in the store's access logs (as the Azure plugin's does), and,
    given whole (botocore's documented ``user_agent`` setting), it is sent as it is: botocore
    otherwise rebuilds its header for every request to list the SDK features in use (telemetry
    for AWS, nothing the store acts on), about 82,000 of the 4.2 million instructions of each
    small GetObject (-2 %; callgrind, interleaved). Botocore then leaves out what only its
    rebuilt header carries: that feature list and an ``sdk_ua_app_id`` from the AWS config.
    """
    try:
        version = importlib.metadata.version("service-backup-s3")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    # boto3's session appends "Botocore/<version>" itself (its user_agent_extra).
    return (
        f"service-backup-s3/{version} Boto3/{boto3.__version__} "
        f"Python/{platform.python_version()} {platform.system()}/{platform.release()}"
    )


class _Counted(io.BytesIO):
    """A PUT body that reports the bytes botocore reads from it to the stall guard."""

    def __init__(self, data: bytes, guard: StallGuard) -> None:
        super().__init__(data)
        self._guard = guard

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._guard.progress(len(data))
        return data


class _Progress(BaseSubscriber):  # type: ignore[misc]
    """s3transfer's progress (bytes of parts sent) for the stall guard."""

    def __init__(self, guard: StallGuard) -> None:
        self._guard = guard

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._guard.progress(max(0, bytes_transferred))


class _KnownSize(BaseSubscriber):  # type: ignore[misc]
    """Tells s3transfer a copy's size, known from the listing: no HeadObject per copy."""

    def __init__(self, size: int) -> None:
        self._size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)


class _Done(BaseSubscriber):  # type: ignore[misc]
    """Counts ``credit`` bytes of progress for every transfer that completes."""

    def __init__(self, guard: StallGuard, credit: int) -> None:
        self._guard = guard
        self._credit = credit

    def on_done(self, future: Any, **kwargs: Any) -> None:
        with contextlib.suppress(DestinationError):  # aborted: the copy's own error says so
            self._guard.progress(self._credit)


def _etag(obj: dict[str, Any]) -> str:
    return str(obj.get("ETag", "")).strip('"').lower()


class _Body(RawRead):
    """An object's body as a raw stream whose failures are DestinationErrors.

    A reset connection, a timeout or a body shorter than its ``Content-Length`` mid-read all
    surface here, and so does botocore's own check of the object's stored checksum when
    ``response_checksum_validation`` asked for one (``StreamingChecksumBody`` checks it on
    the read that finds the end).

    ``read`` hands out what botocore's body returns, without a buffer or copy in between,
    and asks for at most what is left: urllib3 then takes it in one read of the socket
    instead of a second one to find the end. The end itself is read once, and not at all
    where nothing happens there but the length check (botocore's plain ``StreamingBody``):
    once ``Content-Length`` bytes came, HTTP framing ends the body, http.client has already
    released the connection, and botocore's check would compare the same two numbers. A
    body cut short still fails: urllib3 raises on the read that finds the connection closed
    before ``Content-Length`` bytes.
    """

    def __init__(self, body: Any, where: str, size: int | None) -> None:
        self._body = body
        self._where = where
        #: Bytes still to come (the read that takes the last of them ends the body), or
        #: None where the end must be read: an unsized or empty body (reading its end gives
        #: the connection back), or one whose end botocore checks.
        self._left: int | None = size if size and type(body) is StreamingBody else None
        self._ended = False

    readall_piece = READ_SIZE

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._ended or self._left == 0 or size == 0:
            return b""
        try:
            data: bytes = self._body.read(size if self._left is None else min(size, self._left))
        except (BotoCoreError, ClientError) as exc:
            raise DestinationError(f"cannot read {self._where}: {_errors.reason(exc)}") from None
        if not data:
            self._ended = True
        elif self._left is not None:
            self._left -= len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
