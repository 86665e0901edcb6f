"""The ``s3`` destination: AWS S3 and S3-compatible stores through boto3.

Two upload paths, chosen by size:

* below ``MULTIPART_THRESHOLD`` one ``PutObject`` from the calling thread, the body read into
  memory (bounded by the threshold) so that its MD5 goes along as ``Content-MD5`` (the server
  rejects a body that does not match) and the returned ETag is compared with it (catching a
  store that does not check). No HEAD follows: on a server that spends milliseconds per request
  an extra HEAD halves small-file throughput, and the seed's IAM policy does not grant
  ``s3:GetObject`` anyway;
* from the threshold up, s3transfer's managed multipart upload (``PART_CONCURRENCY`` parts in
  flight, shared by all threads of the destination). Parts are read by range through the
  Source while they are sent rather than copied into memory first (``_parts``), each with its
  ``Content-MD5`` (and the SDK's CRC32 when checksums are on), which S3 verifies; the first
  read of every byte goes in file order so that the Source hashes it without holding parts
  back, and a 2 GiB file costs no more memory than a small one. A failed transfer aborts its
  multipart upload, so nothing complete-looking is left behind.

Either way every byte is read once through the core's ``Source``, which raises
``SourceError`` before the last bytes when the file is short, grew or changed: the PUT is then
never sent, and the multipart upload is never completed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import re
import threading
from collections.abc import Iterator
from typing import IO, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound, SourceError
from service_backup.layout import KeyLayout, MiB
from service_backup.source import Source

from . import _errors
from ._parts import PartChecked, ReadAhead, SourceNames, part_md5
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
#: How far first reads of parts may run ahead of the first unread byte of a file
#: (``_parts.ReadAhead``): what the Source may hold in memory to hash in order. Unbounded,
#: eight parts read at once grew RSS by 56 MiB for an 80 MiB upload.
READ_AHEAD = 1 * MiB
#: Parts uploaded at once, across all big files of the destination. On loopback moto 4 and 8
#: are equally fast (the server is the bottleneck); over a real network each connection is
#: latency-bound, so 8 (aws-cli uses 10).
PART_CONCURRENCY = 8
#: A dead or black-holed endpoint fails a request in seconds, not minutes.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
#: botocore "standard" retries: throttling, 5xx and connection errors, exponential back-off
#: with jitter; 4 attempts wait at most about 7 s in total.
MAX_ATTEMPTS = 4
#: Default MaxKeys of a listing page (S3's maximum).
LIST_PAGE_SIZE = 1000

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


class S3Destination(Destination):
    """A bucket and a path in it; keys become ``<bucket_path>/<key>``."""

    file_concurrency = FILE_CONCURRENCY

    def __init__(self, config: S3Config, context: DestinationContext) -> None:
        self.config = config
        self.name = context.display_name
        self.bucket = config.bucket_name.strip()
        self.layout = KeyLayout(config.base_path)
        self.list_page_size = LIST_PAGE_SIZE
        self._transfer: Any = None
        self._transfer_lock = threading.Lock()
        self._names = SourceNames(READ_AHEAD)
        self._bundle = CaBundle(config.ca_cert)
        try:
            self.client = _make_client(config, self._bundle.path)
        except (BotoCoreError, ValueError) as exc:
            self._bundle.close()
            raise DestinationError(
                f"cannot set up the S3 client for bucket {self.bucket}: {_errors.reason(exc)}"
            ) from None
        events = self.client.meta.events
        events.register("before-parameter-build.s3.UploadPart", part_md5)
        kms = config.server_side_encryption.startswith("aws:kms")
        events.register("after-call.s3.UploadPart", PartChecked(kms))

    # -- naming -------------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"{self.bucket}/{self.layout.full(key)}"

    def describe(self, prefix: str) -> str:
        return self.layout.describe(self.bucket, prefix)

    def _fail(self, doing: str, exc: BaseException) -> DestinationError:
        return DestinationError(f"{doing}: {_errors.reason(exc)}")

    # -- bucket -------------------------------------------------------------------------

    def ensure_location(self) -> None:
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
        try:
            if source.size < MULTIPART_THRESHOLD:
                self._put(full, source.read_all())
            else:
                with self._names.register(source) as (name, ahead):
                    self._upload(name, full, ahead)
        except SourceError:
            raise  # the core blames the file (short, grown, modified)
        except DestinationError as exc:  # ours: an integrity check
            raise DestinationError(f"cannot upload {self.bucket}/{full}: {exc}") from None
        except Exception as exc:  # botocore, s3transfer (cancelled, failed part)
            raise self._fail(f"cannot upload {self.bucket}/{full}", exc) from None
        # Every byte went through the Source (it raises otherwise) and S3 accepted them all.
        return ObjectInfo(key=key, size=source.size)

    def _put(self, full: str, body: bytes) -> None:
        md5 = hashlib.md5(body, usedforsecurity=False)
        response = self.client.put_object(
            Bucket=self.bucket,
            Key=full,
            Body=body,
            ContentMD5=base64.b64encode(md5.digest()).decode(),
            **self._extra_args(),
        )
        etag = str(response.get("ETag", "")).strip('"').lower()
        kms = self.config.server_side_encryption.startswith("aws:kms")
        if not kms and _PLAIN_MD5.match(etag) and etag != md5.hexdigest():
            # The store kept something else than what was sent: do not leave it looking
            # like a good backup.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.delete_object(Bucket=self.bucket, Key=full)
            raise DestinationError(
                f"integrity check failed: the store reports MD5 {etag}, the data sent has MD5 "
                f"{md5.hexdigest()}; the object was removed"
            )

    def _upload(self, name: str, full: str, ahead: ReadAhead) -> None:
        """s3transfer's managed multipart upload of a registered ``Source``."""
        future = self._transfer_manager().upload(
            name, self.bucket, full, extra_args=self._extra_args()
        )
        ahead.failed = future.done
        try:
            future.result()
        except BaseException:
            future.cancel()
            raise

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

    # -- read side ----------------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        full_prefix = self.layout.full_prefix(prefix)
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": full_prefix,
                "MaxKeys": self.list_page_size,
            }
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
            for obj in page.get("Contents", ()):
                yield ObjectInfo(
                    key=self.layout.key_of(obj["Key"]),
                    size=int(obj["Size"]),
                    modified=obj.get("LastModified"),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def open_read(self, key: str) -> IO[bytes]:
        where = self._where(key)
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.layout.full(key), ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if _errors.is_not_found(exc):
                raise ObjectNotFound(f"{where} not found") from None
            raise self._fail(f"cannot read {where}", exc) from None
        except BotoCoreError as exc:
            raise self._fail(f"cannot read {where}", exc) from None
        return io.BufferedReader(_BodyReader(response["Body"], where), buffer_size=1 * MiB)

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
        self.client.close()
        self._bundle.close()


def _make_client(config: S3Config, ca_bundle: str) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id.reveal().strip(),
        aws_secret_access_key=config.secret_access_key.reveal().strip(),
        region_name=config.effective_region,
    )
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url.strip() or None,
        verify=ca_bundle,
        config=BotoConfig(
            signature_version="s3v4",
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
            max_pool_connections=FILE_CONCURRENCY + PART_CONCURRENCY + 2,
            s3={"addressing_style": config.effective_addressing_style},
            tcp_keepalive=True,
            # The manifest says where backups go, not AWS_ENDPOINT_URL in some environment.
            ignore_configured_endpoint_urls=True,
        ),
    )


class _BodyReader(io.RawIOBase):
    """An object's body as a raw stream whose failures are DestinationErrors.

    botocore verifies the object's CRC32 (when S3 stored one) at the end of the body and
    raises on a mismatch; that, a reset connection or a timeout mid-read all surface here.
    """

    def __init__(self, body: Any, where: str) -> None:
        self._body = body
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, ClientError) as exc:
            raise DestinationError(f"cannot read {self._where}: {_errors.reason(exc)}") from None
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
