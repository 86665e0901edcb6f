"""The ``gcs`` destination: google-cloud-storage with a service account's own key.

Credentials come from the key JSON held in memory (google-auth signs a JWT with its private key
and exchanges it for an access token at the JSON's ``token_uri``); nothing is written to disk.

Uploads stream. Files up to ``SINGLE_REQUEST_LIMIT`` go through the SDK as one multipart
request carrying their CRC32C, which GCS checks. Larger files go as a resumable upload whose
whole content is streamed in ONE request from the open file (``_StreamedUpload``), computing
the CRC32C on the way and comparing it with the one GCS reports for the finished object (a
mismatch deletes the object). If that request fails, the session is asked how much it kept
and the upload resumes from there. Memory per upload is a few blocks whatever the file size,
and nothing exists under the key until the last byte is in.

Why not the SDK's chunked resumable upload: it holds one chunk in memory (twice, briefly) and
costs a request per chunk; Google's guidance is to upload in a single chunk when possible.
Measured against gcp-storage-emulator (which rewrites the partial object on every chunk), a
1 GiB file took 55-70 s with 16-32 MiB chunks and 32-64 MiB of extra memory.

Requests time out after ``CONNECT_TIMEOUT``/``READ_TIMEOUT``; 429/5xx and network errors are
retried with back-off for at most ``retry_deadline`` seconds per operation, so a dead endpoint
fails a run in bounded time instead of the SDK's two minutes per call.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http
import io
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any, Final

import google_crc32c
import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.secret import scrub
from service_backup.source import Source

from .config import GCSConfig, parse_service_account

KiB: Final = 1024
MiB: Final = 1024 * KiB
#: Files up to this size go in one multipart request built in memory (the SDK reads them whole):
#: small enough that ``file_concurrency`` of them stay cheap, large enough that typical small
#: files cost one request instead of two.
SINGLE_REQUEST_LIMIT: Final = 2 * MiB
#: Read size while streaming a large file (and while re-reading it to resume).
STREAM_BLOCK: Final = 256 * KiB
CONNECT_TIMEOUT: Final = 10.0
#: Waiting for the server: between bytes, and for the answer once a request is sent.
READ_TIMEOUT: Final = 60.0
#: Total time one operation keeps retrying 429/5xx/network errors.
RETRY_DEADLINE: Final = 30.0
LIST_PAGE_SIZE: Final = 1000
#: Full control covers creating the bucket; the seed asks for the Storage Admin role anyway.
SCOPES: Final = ("https://www.googleapis.com/auth/devstorage.full_control",)
PUBLIC_ENDPOINT: Final = "https://storage.googleapis.com"
CONTENT_TYPE: Final = "application/octet-stream"
_RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
#: Failures of the connection itself (urllib3's own errors escape from a streamed body).
_NETWORK_ERRORS: Final = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    urllib3.exceptions.HTTPError,
)

_METHOD_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD) \S+: ")


class GCSDestination(Destination):
    """A bucket (and optional ``bucket_path`` inside it) on Google Cloud Storage.

    ``file_concurrency`` is 4. Parallel requests hide GCS's per-request latency for many small
    files, and memory stays small whatever the count (a small file is at most
    ``SINGLE_REQUEST_LIMIT`` in memory, a large one a few stream blocks). More gains little
    for backup-sized folders, and against gcp-storage-emulator it hurts: the emulator serves
    one request at a time with a listen backlog of 5, so extra connections only queue or are
    dropped and retried by TCP.
    """

    file_concurrency = 4

    def __init__(self, config: GCSConfig, context: DestinationContext) -> None:
        self.name = context.display_name
        self.bucket_name = config.bucket_name.strip()
        self.base = config.bucket_path
        self.project_id = config.project_id.strip()
        self.location = config.location
        self.storage_class = config.storage_class
        self.list_page_size = LIST_PAGE_SIZE
        self.retry_deadline = RETRY_DEADLINE
        key_text = config.service_account_json.reveal()
        try:
            info = parse_service_account(key_text)
        except ValueError as exc:
            raise DestinationError(str(exc)) from None
        self._errors = _Translator(
            bucket=self.bucket_name,
            endpoint=config.endpoint or _emulator_host() or PUBLIC_ENDPOINT,
            token_uri=info["token_uri"],
            client_email=info["client_email"],
            secrets=[key_text, info["private_key"]],
        )
        try:
            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        except (ValueError, TypeError, IndexError, auth_exceptions.GoogleAuthError):
            # The SDK's message may quote the key; say which field is wrong, nothing more.
            raise DestinationError(
                "service_account_json: private_key is not a valid PEM private key"
            ) from None
        options = {"api_endpoint": config.endpoint} if config.endpoint else None
        try:
            self._client = storage.Client(
                project=self.project_id, credentials=credentials, client_options=options
            )
        except Exception as exc:
            raise self._errors.translate(exc, "creating the GCS client") from None
        self._bucket = self._client.bucket(self.bucket_name)
        # For streamed upload requests: the same credentials (and cached token). No automatic
        # retry on 401, which would re-send a body that has already been consumed.
        self._session = AuthorizedSession(credentials, refresh_status_codes=())

    # ---------------------------------------------------------------------------- helpers
    @property
    def _timeout(self) -> tuple[float, float]:
        return (CONNECT_TIMEOUT, READ_TIMEOUT)

    def _retry(self) -> Retry:
        return DEFAULT_RETRY.with_timeout(self.retry_deadline).with_delay(
            initial=0.5, maximum=8.0, multiplier=2.0
        )

    def _object_name(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise DestinationError(f"invalid key {key!r}")
        return f"{self.base}/{key}" if self.base else key

    def _key_of(self, name: str) -> str:
        return name[len(self.base) + 1 :] if self.base else name

    def _where(self, key: str) -> str:
        return f"{self.bucket_name}/{self._object_name(key)}"

    # ---------------------------------------------------------------------- the interface
    def describe(self, prefix: str) -> str:
        return "/".join(part for part in (self.bucket_name, self.base, prefix) if part)

    def ensure_location(self) -> None:
        what = f"checking bucket {self.bucket_name}"
        try:
            self._client.get_bucket(self.bucket_name, timeout=self._timeout, retry=self._retry())
            return
        except api_exceptions.NotFound:
            pass
        except Exception as exc:
            raise self._errors.translate(exc, what) from None
        bucket = self._client.bucket(self.bucket_name)
        bucket.storage_class = self.storage_class
        try:
            self._client.create_bucket(
                bucket,
                project=self.project_id,
                location=self.location,
                timeout=self._timeout,
                retry=self._retry(),
            )
        except api_exceptions.Conflict:
            # Created meanwhile (another VM's run) is fine; owned by someone else is not.
            try:
                self._client.get_bucket(
                    self.bucket_name, timeout=self._timeout, retry=self._retry()
                )
            except Exception as exc:
                raise DestinationError(
                    f"bucket name {self.bucket_name} is taken by another project "
                    f"({self._errors.translate(exc, 'checking it')})"
                ) from None
        except Exception as exc:
            raise self._errors.translate(
                exc,
                f"creating bucket {self.bucket_name} in project {self.project_id} "
                f"({self.location}, {self.storage_class})",
            ) from None

    def write(self, key: str, source: Source) -> ObjectInfo:
        with source.open() as stream:
            return self._write_stream(key, stream, source.size)

    def _write_stream(self, key: str, stream: IO[bytes], size: int) -> ObjectInfo:
        name = self._object_name(key)
        what = f"upload of {self._where(key)}"
        if size > SINGLE_REQUEST_LIMIT:
            upload = _StreamedUpload(self, self._bucket.blob(name), stream, size, what)
            resource = upload.run()
            stored = int(resource.get("size", -1))
            modified = _timestamp(resource.get("updated"))
            if stored != size:
                self._discard(self._bucket.blob(name))
        else:
            blob = self._bucket.blob(name)
            source = _TrackedStream(stream)
            try:
                blob.upload_from_file(
                    source,  # type: ignore[arg-type]
                    size=size,
                    rewind=False,
                    content_type=CONTENT_TYPE,
                    checksum="crc32c",  # sent with the object; GCS refuses a mismatch
                    timeout=self._timeout,
                    retry=self._retry(),
                )
            except Exception as exc:
                if source.error is not None:
                    raise source.error from None  # the source failed: the core names the file
                raise self._errors.translate(exc, what) from None
            stored, modified = (blob.size if blob.size is not None else -1), blob.updated
            if stored != size:
                self._discard(blob)
        if stored != size:  # the source shrank under us: no short object may remain
            raise DestinationError(
                f"{what} stored {stored} bytes instead of {size}; the object was removed"
            )
        return ObjectInfo(key=key, size=size, modified=modified)

    def _discard(self, blob: storage.Blob) -> None:
        # Best effort: the error raised next says what failed.
        with contextlib.suppress(Exception):
            blob.delete(timeout=self._timeout, retry=self._retry())

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        name_prefix = f"{self.base}/{prefix}" if self.base else prefix
        try:
            blobs = self._client.list_blobs(
                self.bucket_name,
                prefix=name_prefix or None,
                page_size=self.list_page_size,
                fields="items(name,size,updated),nextPageToken",
                timeout=self._timeout,
                retry=self._retry(),
            )
            for blob in blobs:
                yield ObjectInfo(key=self._key_of(blob.name), size=blob.size or 0,
                                 modified=blob.updated)  # fmt: skip
        except api_exceptions.NotFound:
            return  # no bucket yet: nothing stored
        except Exception as exc:
            raise self._errors.translate(exc, f"listing {self.bucket_name}/{name_prefix}") from None

    def _get(self, key: str) -> storage.Blob:
        try:
            blob = self._bucket.get_blob(
                self._object_name(key), timeout=self._timeout, retry=self._retry()
            )
        except Exception as exc:
            raise self._errors.translate(
                exc, f"reading {self._where(key)}", missing=self._missing(key)
            ) from None
        if blob is None:
            raise ObjectNotFound(self._missing(key))
        return blob

    def _missing(self, key: str) -> str:
        return f"{key} not found in bucket {self.bucket_name}" + (
            f" under {self.base}" if self.base else ""
        )

    def open_read(self, key: str) -> IO[bytes]:
        found = self._get(key)
        # Pinned to the generation just seen, so a concurrent overwrite cannot mix two
        # versions. The URL is built here, not taken from the object's mediaLink, which the
        # emulator does not percent-encode ('#' or '?' in a name would break it).
        url = (
            f"{self._client.api_endpoint}/download/storage/v1/b/"
            f"{urllib.parse.quote(self.bucket_name, safe='')}/o/"
            f"{urllib.parse.quote(found.name, safe='')}?alt=media&generation={found.generation}"
        )
        reader = _StreamedRead(self, key, url, found.size or 0, found.crc32c)
        return io.BufferedReader(reader, STREAM_BLOCK)  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo:
        blob = self._get(key)
        return ObjectInfo(key=key, size=blob.size or 0, modified=blob.updated)

    def delete(self, key: str) -> None:
        try:
            self._bucket.delete_blob(
                self._object_name(key), timeout=self._timeout, retry=self._retry()
            )
        except Exception as exc:
            raise self._errors.translate(
                exc, f"deleting {self._where(key)}", missing=self._missing(key)
            ) from None

    def close(self) -> None:
        self._session.close()
        self._client.close()


# -------------------------------------------------------------------- streams


class _StreamedUpload:
    """One large file as a resumable upload streamed in a single request, resumed on failure.

    The session is created through the SDK (so its URL, metadata and retries are the SDK's);
    the bytes go as ``PUT <session>`` with ``Content-Range: bytes <from>-<last>/<size>`` and
    the open file as the body, which requests/urllib3 send in small blocks. After a failure the
    session says how much it kept (``Content-Range: bytes */<size>``) and the next request
    starts there. The CRC32C covers the whole file: resuming re-reads the kept part to rebuild
    it, which only happens after a failure.
    """

    def __init__(
        self, owner: GCSDestination, blob: storage.Blob, stream: IO[bytes], size: int, what: str
    ) -> None:
        self.owner, self.blob, self.size, self.what = owner, blob, size, what
        self.body = _Body(stream, size)

    def run(self) -> dict[str, Any]:
        owner = self.owner
        try:
            url = self.blob.create_resumable_upload_session(
                content_type=CONTENT_TYPE,
                size=self.size,
                checksum=None,  # checked below against the CRC32C computed while streaming
                timeout=owner._timeout,
                retry=owner._retry(),
            )
        except Exception as exc:
            raise owner._errors.translate(exc, self.what) from None
        deadline = time.monotonic() + owner.retry_deadline
        delay, offset = 0.5, 0
        while True:
            failure = self._send(url, offset)
            if isinstance(failure, dict):
                return self._verified(failure)
            if time.monotonic() + delay > deadline:
                raise owner._errors._error(f"{failure} (gave up after retrying)")
            time.sleep(delay)  # back-off before asking the session where to resume
            delay = min(delay * 2, 8.0)
            status = self._status(url)
            if isinstance(status, dict):
                return self._verified(status)
            if isinstance(status, int):
                offset = status

    def _send(self, url: str, offset: int) -> dict[str, Any] | str:
        """Stream from ``offset`` to the end: the object's resource, or why it failed."""
        self.body.rewind_to(offset)
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Content-Range": f"bytes {offset}-{self.size - 1}/{self.size}",
        }
        try:
            response = self.owner._session.put(
                url, data=self.body, headers=headers, timeout=self.owner._timeout
            )
        except Exception as exc:
            if self.body.error is not None:
                raise self.body.error from None  # the source failed: the core names the file
            if not _transient(exc):
                raise self.owner._errors.translate(exc, self.what) from None
            return str(self.owner._errors.translate(exc, self.what))
        return self._outcome(response)

    def _status(self, url: str) -> dict[str, Any] | int | str:
        """Ask the session: finished (resource), bytes kept so far (int), or why it failed."""
        headers = {"Content-Range": f"bytes */{self.size}"}
        try:
            response = self.owner._session.put(
                url, data=b"", headers=headers, timeout=self.owner._timeout
            )
        except Exception as exc:
            if not _transient(exc):
                raise self.owner._errors.translate(exc, self.what) from None
            return str(self.owner._errors.translate(exc, self.what))
        if response.status_code == 308:
            kept = re.fullmatch(r"bytes=0-(\d+)", response.headers.get("Range", ""))
            return int(kept.group(1)) + 1 if kept else 0
        return self._outcome(response)

    def _outcome(self, response: requests.Response) -> dict[str, Any] | str:
        if response.status_code in (200, 201):
            try:
                resource = response.json()
            except ValueError:
                resource = None
            if isinstance(resource, dict):
                return resource
            return f"{self.what} failed: GCS answered the upload without the object's metadata"
        if response.status_code == 308:
            return f"{self.what} failed: GCS kept only part of the upload"
        error = api_exceptions.from_http_response(response)
        if response.status_code in _RETRYABLE_STATUS:
            return str(self.owner._errors.translate(error, self.what))
        if response.status_code in (404, 410):
            raise self.owner._errors._error(
                f"{self.what} failed: the upload session expired or was cancelled "
                f"(HTTP {response.status_code})"
            )
        raise self.owner._errors.translate(error, self.what)

    def _verified(self, resource: dict[str, Any]) -> dict[str, Any]:
        expected = base64.b64encode(self.body.crc.digest()).decode()
        stored = resource.get("crc32c")
        if self.body.position != self.size or (stored is not None and stored != expected):
            self.owner._discard(self.blob)
            raise self.owner._errors._error(
                f"{self.what} failed: checksum mismatch, GCS stored different data than was "
                f"sent (CRC32C {stored}, sent {expected}); the object was removed"
            )
        return resource


class _Body:
    """The file as a request body from ``position`` on, with a running CRC32C of what was read.

    ``__len__`` makes requests send a Content-Length and stream ``read`` blocks rather than
    load the file. Only errors raised by the source itself are recorded in ``error``.
    """

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self._start = stream.tell() if stream.seekable() else 0
        self.size = size
        self.position = 0
        self.crc = google_crc32c.Checksum()
        self.error: BaseException | None = None

    def __len__(self) -> int:
        return self.size - self.position

    def rewind_to(self, offset: int) -> None:
        """Continue from ``offset``: re-read from the start to rebuild the CRC32C if needed."""
        if offset == self.position:
            return
        self._seek(0)
        self.crc, self.position = google_crc32c.Checksum(), 0
        while self.position < offset:
            if not self.read(min(STREAM_BLOCK, offset - self.position)):
                break

    def _seek(self, offset: int) -> None:
        try:
            self._stream.seek(self._start + offset)
        except OSError as exc:
            self.error = exc
            raise

    def read(self, size: int = -1) -> bytes:
        remaining = self.size - self.position
        if size is None or size < 0 or size > remaining:
            size = remaining
        try:
            data = self._stream.read(min(size, STREAM_BLOCK))
            if not data and size:
                raise OSError(
                    f"the file ended after {self.position} of {self.size} bytes "
                    "(it shrank during the upload)"
                )
        except OSError as exc:
            self.error = exc
            raise
        self.crc.update(data)
        self.position += len(data)
        return data


class _TrackedStream:
    """The source file as the SDK reads it, remembering an error the source itself raised.

    The SDK lets an OSError from the stream escape as it is, but a socket error can be an
    OSError too: only errors raised here are the source's fault (the core then names the file).
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except OSError as exc:
            self.error = exc
            raise

    def tell(self) -> int:
        return self._stream.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def seekable(self) -> bool:
        return self._stream.seekable()

    def readable(self) -> bool:
        return True


class _StreamedRead(io.RawIOBase):
    """An object read in one streamed GET, resumed with a Range after a network failure.

    Memory is one socket buffer whatever the size; the emulator (which loads the whole object
    for every request) reads it once. Ranged reads carry no checksum, so a running CRC32C is
    compared with the object's when the last byte has been read.
    """

    def __init__(
        self, owner: GCSDestination, key: str, url: str, size: int, crc32c: str | None
    ) -> None:
        self._owner, self._key, self._url = owner, key, url
        self._size, self._expected = size, crc32c
        self._crc = google_crc32c.Checksum()
        self._position = 0
        self._response: requests.Response | None = None
        self._verified = False

    def readable(self) -> bool:
        return True

    @property
    def _what(self) -> str:
        return f"reading {self._owner._where(self._key)}"

    def _open(self) -> None:
        headers = {"Range": f"bytes={self._position}-"} if self._position else {}
        response = self._owner._session.get(
            self._url, headers=headers, stream=True, timeout=self._owner._timeout
        )
        expected = 206 if self._position else 200
        if response.status_code == expected or (response.status_code == 206 and not headers):
            self._response = response
            return
        try:
            if response.status_code == 404:
                raise ObjectNotFound(self._owner._missing(self._key) + " (deleted while read)")
            if response.status_code == 200:
                raise self._owner._errors._error(f"{self._what} failed: GCS ignored the Range")
            raise api_exceptions.from_http_response(response)
        finally:
            response.close()

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed stream")
        if self._position >= self._size:
            self._verify()
            return 0
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._position)
        deadline = time.monotonic() + self._owner.retry_deadline
        delay = 0.5
        while True:
            try:
                if self._response is None:
                    self._open()
                assert self._response is not None
                data = self._response.raw.read(wanted, decode_content=False)
                if not data:
                    raise ConnectionError("the download ended early")
                break
            except DestinationError:
                raise
            except Exception as exc:
                self._drop()
                retryable = _transient(exc) or _status(exc) in _RETRYABLE_STATUS
                error = self._owner._errors.translate(exc, self._what)
                if not retryable:
                    raise error from None
                if time.monotonic() + delay > deadline:
                    raise self._owner._errors._error(f"{error} (gave up after retrying)") from None
                time.sleep(delay)  # back-off, then resume from the last byte received
                delay = min(delay * 2, 8.0)
        count = len(data)
        view[:count] = data
        self._crc.update(data)
        self._position += count
        if self._position >= self._size:
            self._verify()
        return count

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        if self._expected is None:
            return
        actual = base64.b64encode(self._crc.digest()).decode()
        if actual != self._expected:
            raise self._owner._errors._error(
                f"{self._what} failed: checksum mismatch (CRC32C {actual}, stored {self._expected})"
            )

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self._drop()
        super().close()


def _transient(exc: BaseException) -> bool:
    """A network failure worth resuming after (not a refused token or a bad URL)."""
    if isinstance(exc, auth_exceptions.RefreshError):
        return False
    if isinstance(exc, auth_exceptions.TransportError):
        return True
    return isinstance(exc, _NETWORK_ERRORS)


def _timestamp(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _emulator_host() -> str:
    return os.environ.get("STORAGE_EMULATOR_HOST", "")


# ------------------------------------------------------------------- errors


class _Translator:
    """Turns SDK exceptions into one-line DestinationErrors naming the thing at fault.

    The SDK's exceptions carry URLs, response bodies and nested causes; an operator needs the
    bucket, object, token endpoint or GCS endpoint and the reason, with no key material.
    """

    def __init__(
        self, bucket: str, endpoint: str, token_uri: str, client_email: str, secrets: list[str]
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.token_uri = token_uri
        self.client_email = client_email
        self.secrets = secrets

    def _error(self, text: str, cls: type[DestinationError] = DestinationError) -> DestinationError:
        return cls(scrub(_one_line(text, 600), self.secrets))

    def translate(
        self, exc: BaseException, what: str, *, missing: str | None = None
    ) -> DestinationError:
        """A DestinationError for ``exc`` raised while doing ``what``.

        A 404 is ``ObjectNotFound(missing)`` when ``missing`` is given (the call named an
        object), else it means the bucket is missing.
        """
        if isinstance(exc, DestinationError):
            return exc
        if isinstance(exc, api_exceptions.RetryError):
            if exc.cause is None:
                return self._error(f"{what} failed: {_one_line(str(exc))}")
            inner = self.translate(exc.cause, what, missing=missing)
            return self._error(f"{inner} (gave up after retrying)", type(inner))
        status = _status(exc)
        if status == 404:
            if missing is not None:
                return self._error(missing, ObjectNotFound)
            return self._error(f"{what} failed: bucket {self.bucket} not found")
        if status == 403:
            return self._error(
                f"{what} failed: access denied to bucket {self.bucket} for "
                f"{self.client_email} (the service account needs the Storage Admin role)"
            )
        if status == 401:
            return self._error(
                f"{what} failed: GCS rejected the credentials of {self.client_email}"
            )
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            return self._error(f"{what} failed: {_api_reason(exc)}")
        if isinstance(exc, DataCorruption):
            return self._error(
                f"{what} failed: checksum mismatch, GCS stored different data than was sent"
            )
        if isinstance(exc, InvalidResponse):
            return self._error(f"{what} failed: unexpected HTTP {status} from GCS")
        if isinstance(exc, auth_exceptions.RefreshError):
            reason = exc.args[0] if exc.args else "refused"
            return self._error(
                f"{what} failed: the token endpoint {self.token_uri} refused the service "
                f"account {self.client_email}: {_one_line(str(reason), 200)}"
            )
        if isinstance(exc, auth_exceptions.TransportError):
            cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
            return self._error(
                f"{what} failed: cannot reach the token endpoint {self.token_uri}: "
                f"{_network_reason(cause)}"
            )
        if isinstance(exc, (*_NETWORK_ERRORS, requests.RequestException)):
            return self._error(
                f"{what} failed: cannot reach GCS at {self.endpoint}: {_network_reason(exc)}"
            )
        if isinstance(exc, auth_exceptions.GoogleAuthError):
            return self._error(f"{what} failed: credentials problem: {_one_line(str(exc), 200)}")
        return self._error(f"{what} failed: {type(exc).__name__}: {_one_line(str(exc), 200)}")


def _status(exc: BaseException) -> int:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return int(exc.code or 0)
    if isinstance(exc, InvalidResponse):
        return int(getattr(getattr(exc, "response", None), "status_code", 0) or 0)
    return 0


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _network_reason(exc: BaseException) -> str:
    """'connection refused', 'timed out', ... from a requests/urllib3 exception chain."""
    text = str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
        return "timed out"
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not known"),
        ("Temporary failure in name resolution", "host name not resolvable"),
        ("No route to host", "no route to host"),
        ("Connection reset", "connection reset"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("RemoteDisconnected", "connection closed by the server"),
    ):
        if marker in text:
            return reason
    return _one_line(f"{type(exc).__name__}: {text}", 160)


def _api_reason(exc: api_exceptions.GoogleAPICallError) -> str:
    message = _METHOD_PREFIX.sub("", str(exc.message or "")).strip()
    code = int(exc.code or 0)
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    head = f"HTTP {code} {phrase}".strip()
    return _one_line(f"{head}: {message}" if message and message != phrase else head)
