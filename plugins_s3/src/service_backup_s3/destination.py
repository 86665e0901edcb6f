"""The ``s3`` destination: AWS S3 and S3-compatible stores through boto3.

Two upload paths, chosen by size:

* below ``MULTIPART_THRESHOLD`` one ``PutObject`` from the calling thread, the body read into
  memory (bounded by the threshold) so that its MD5 goes along as ``Content-MD5`` (the server
  rejects a body that does not match) and the returned ETag is compared with it (catching a
  store that does not check). No HEAD follows: on a server that spends milliseconds per request
  an extra HEAD halves small-file throughput, and the seed's IAM policy does not grant
  ``s3:GetObject`` anyway;
* from the threshold up, s3transfer's managed multipart upload (``PART_CONCURRENCY`` parts in
  flight, shared by all threads of the destination). A source file's parts are read by offset
  while they are sent rather than copied into memory first (``_source``), so a 2 GiB file
  costs no more memory than a small one. Each part carries the SDK's CRC32 checksum, which S3
  verifies, and a failed transfer aborts its multipart upload, so nothing complete-looking is
  left behind.

Either way the stored size reported back is the number of bytes the transfer actually read
from the source, which the core compares with the file's size.
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
from service_backup.errors import BackupError, DestinationError, ObjectNotFound
from service_backup.source import Source as CoreSource

from . import _errors
from ._source import SizedReader, Source, SourceFiles, file_descriptor, source_error
from ._tls import CaBundle
from .config import S3Config

MiB = 1024 * 1024

#: Files uploaded at once. Many small files are bound by the server's per-request latency,
#: not bandwidth; ~8 requests in flight keep moto and S3 busy without oversubscribing a small
#: VM (measured: 8 beats 4 and matches 16 on 5,000 small files).
FILE_CONCURRENCY = 8
#: Size from which a file goes up in parts. Below it the body is held in memory once, so the
#: worst case for small files is FILE_CONCURRENCY * MULTIPART_THRESHOLD.
MULTIPART_THRESHOLD = 8 * MiB
#: Part size: s3transfer's default; it grows it for files that would need over 10,000 parts.
PART_SIZE = 8 * MiB
#: Parts uploaded at once, across all big files of the destination. On loopback moto 4 and 8
#: are equally fast (the server is the bottleneck); over a real network each connection is
#: latency-bound, so 8 (aws-cli uses 10).
PART_CONCURRENCY = 8
#: Only for streams without a file descriptor (a file's parts are read by offset while they
#: are sent, see ``_source``): parts queued in memory, plus the one being read, so about
#: 40 MiB of part data (RSS growth measured for an 80 MiB stream: 16-72 MiB, depending on how
#: glibc's per-thread arenas reuse the freed parts; for an 80 MiB file: 17 MiB).
MAX_PARTS_IN_MEMORY = 4
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
        self.base = config.base_path
        self.list_page_size = LIST_PAGE_SIZE
        self._transfer: Any = None
        self._transfer_lock = threading.Lock()
        self._files = SourceFiles()
        self._bundle = CaBundle(config.ca_cert)
        try:
            self.client = _make_client(config, self._bundle.path)
        except (BotoCoreError, ValueError) as exc:
            self._bundle.close()
            raise DestinationError(
                f"cannot set up the S3 client for bucket {self.bucket}: {_errors.reason(exc)}"
            ) from None

    # -- naming -------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        if not key:
            raise DestinationError(f"invalid empty key in bucket {self.bucket}")
        return f"{self.base}/{key}" if self.base else key

    def _where(self, key: str) -> str:
        return f"{self.bucket}/{self._key(key)}"

    def describe(self, prefix: str) -> str:
        parts = [self.bucket, self.base, prefix.strip("/")]
        return "/".join(p for p in parts if p)

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

    def write(self, key: str, source: CoreSource) -> ObjectInfo:
        with source.open() as stream:
            return self._write_stream(key, stream, source.size)

    def _write_stream(self, key: str, stream: IO[bytes], size: int) -> ObjectInfo:
        full = self._key(key)
        reader = SizedReader(stream, size)
        source: SizedReader | Source = reader
        try:
            if size < MULTIPART_THRESHOLD:
                self._put(full, reader)
            elif (fd := file_descriptor(stream)) is not None:
                with self._files.register(fd, reader.start, size) as (name, source):
                    self._upload(name, full)
            else:
                self._upload(reader, full)
        except BackupError:
            raise  # e.g. the core's SourceError from reading the stream
        except Exception as exc:  # botocore, s3transfer (cancelled, failed part), source
            if source.read_error is not None:
                raise source_error(stream, source.read_error) from None
            raise self._fail(f"cannot upload {self.bucket}/{full}", exc) from None
        return ObjectInfo(key=key, size=source.bytes_read)

    def _put(self, full: str, reader: SizedReader) -> None:
        body = reader.read()
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
                f"integrity check failed for {self.bucket}/{full}: the store reports MD5 "
                f"{etag}, the data sent has MD5 {md5.hexdigest()}; the object was removed"
            )

    def _upload(self, source: str | SizedReader, full: str) -> None:
        """s3transfer's managed (multipart) upload of a source name or stream."""
        future = self._transfer_manager().upload(
            source, self.bucket, full, extra_args=self._extra_args()
        )
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
                        max_in_memory_upload_chunks=MAX_PARTS_IN_MEMORY,
                    ),
                    osutil=self._files,
                )
            return self._transfer

    # -- read side ----------------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = f"{self.base}/" if self.base else ""
        full_prefix = base + prefix.lstrip("/")
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
                    key=obj["Key"][len(base) :],
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
                Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED"
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
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
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
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
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
