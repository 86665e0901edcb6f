"""The ``gcs`` destination: google-cloud-storage, credentials held in memory.

Uploads stream from the core ``Source``. Files up to ``SINGLE_REQUEST_LIMIT`` go through the
SDK as one multipart request carrying their CRC32C, which GCS checks before it stores
anything; larger files go as one resumable session streamed in a single request
(``_resumable``). Either way nothing replaces an object under the key until every byte
arrived, and a source that ends early, grows or changes raises before its last bytes.

Every request runs under one rule: connect/read timeouts, a stall guard (throughput below
``stall_min_bytes_per_second`` for ``stall_timeout_seconds`` cuts the connection, and so
does shutdown), and the core's bounded back-off for 429/5xx and network errors, so a dead or
trickling endpoint fails a run in bounded time with an error naming it.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Final, TypeVar

import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.auth.transport.requests import AuthorizedSession, Request
from google.cloud import storage

from service_backup import tls
from service_backup.backoff import retry
from service_backup.destination import (
    Destination,
    DestinationContext,
    ObjectInfo,
    common_folder,
)
from service_backup.errors import BackupError, DestinationError, ObjectNotFound
from service_backup.layout import KeyLayout, MiB
from service_backup.source import Source
from service_backup.stall import StallGuard, StallRule
from service_backup.stall_watches import LateWatches

from ._credentials import load_credentials
from ._download import StreamedRead
from ._errors import Translator, transient
from ._resumable import CONTENT_TYPE, StreamedUpload
from ._transport import mount, tracking

T = TypeVar("T")
#: The thread that starts the stall guards of reads that outlast ``stall_watches.DELAY``.
READ_WATCHER = "gcs-read-watches"

#: Files up to this size go in one multipart request built in memory (the SDK reads them whole):
#: small enough that ``file_concurrency`` of them stay cheap, large enough that typical small
#: files cost one request instead of two.
SINGLE_REQUEST_LIMIT: Final = 2 * MiB
CONNECT_TIMEOUT: Final = 10.0
#: Waiting for the server: between bytes, and for the answer once a request is sent.
READ_TIMEOUT: Final = 60.0
#: How long a failing operation keeps retrying 429/5xx/network errors without progress.
RETRY_DEADLINE: Final = 30.0
LIST_PAGE_SIZE: Final = 1000
PUBLIC_ENDPOINT: Final = "https://storage.googleapis.com"
#: How long the headers ``credentials.before_request`` made for one media GET serve the next
#: ones (every reader thread shares them). google-auth refreshes a token once it has less than
#: 3 min 45 s left (``REFRESH_THRESHOLD``), so a token it let through is good for minutes more,
#: far beyond this; reused, it saves google-auth's per-request work (the expiry check against
#: the clock, the regional-access-boundary look-up of the URL and the environment, the metrics
#: header), about 3 % of the client's work per small object read.
AUTH_REUSE_SECONDS: Final = 1.0


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

    def __init__(self, config: Any, context: DestinationContext) -> None:
        self.name = context.display_name
        self.stop = context.stop
        self.bucket_name = config.bucket_name.strip()
        self.layout = KeyLayout(config.bucket_path)
        self.project_id = config.project_id.strip()
        self.location = config.location
        self.storage_class = config.storage_class
        self.list_page_size = LIST_PAGE_SIZE
        self.retry_deadline = RETRY_DEADLINE
        self.timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)
        self.rule = StallRule(config.stall_timeout_seconds, config.stall_min_bytes_per_second)
        self.promote_by_copy = bool(config.promote_by_copy)
        endpoint = config.endpoint or os.environ.get("STORAGE_EMULATOR_HOST", "")
        found = load_credentials(config)
        self.errors = Translator(
            bucket=self.bucket_name,
            endpoint=endpoint or PUBLIC_ENDPOINT,
            principal=found.principal,
            token_uri=found.token_uri,
            secrets=found.secrets,
        )
        # One session for the SDK client and the streamed requests: the same cached token,
        # and connections a stall guard can cut. No automatic retry on 401, which would
        # re-send a streamed body that has already been consumed.
        # Both verify against the OS trust store (BOSH trusted_certs), not certifi's bundle.
        verify = tls.requests_verify()
        token_session = requests.Session()
        token_session.verify = verify
        mount(token_session, 1)
        self.auth_request = Request(token_session)
        self.session = AuthorizedSession(
            found.credentials, refresh_status_codes=(), auth_request=self.auth_request
        )
        self.session.verify = verify
        self._media_adapter = mount(self.session, self.file_concurrency + 1)
        options = {"api_endpoint": config.endpoint} if config.endpoint else None
        try:
            self._client = storage.Client(
                project=self.project_id,
                credentials=found.credentials,
                _http=self.session,
                client_options=options,
            )
        except Exception as exc:
            self.session.close()
            raise self.errors.translate(exc, "creating the GCS client") from None
        self.bucket = self._client.bucket(self.bucket_name)
        # The proxy environment (HTTPS_PROXY/NO_PROXY) is honoured as requests would, but read
        # once here: with trust_env requests re-reads every variable and ~/.netrc on each
        # request, about as much client CPU as the rest of a small read. The session talks
        # only to the storage endpoint (token refreshes go through token_session).
        self.session.trust_env = False
        self.session.proxies.update(requests.utils.get_environ_proxies(self._client.api_endpoint))
        # The media URL prefix, normalised by requests once (``media_get`` appends only
        # percent-encoded names), and the headers every request of this session carries.
        self._media_base = str(
            self.session.prepare_request(
                requests.Request(
                    "GET",
                    f"{self._client.api_endpoint}/download/storage/v1/b/"
                    f"{urllib.parse.quote(self.bucket_name, safe='')}/o/",
                )
            ).url
        )
        self._media_headers: dict[str, str | bytes] = dict(self.session.headers)
        self._media_pool = self._pool_for(self._media_base)
        # Through an HTTP proxy (not tunnelled) the request line carries the whole URL.
        prepared = requests.Request("GET", self._media_base).prepare()
        in_line = self._media_adapter.request_url(prepared, self.session.proxies)
        self._media_full_url = in_line.startswith(("http://", "https://"))
        self._media_origin_length = len(self._media_base) - len(prepared.path_url)
        self._media_timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        self.auth_reuse_seconds = AUTH_REUSE_SECONDS
        #: (when, headers): what the last ``before_request`` of a media GET produced.
        self._media_auth: tuple[float, dict[str, str | bytes]] | None = None
        self.reads = LateWatches(self.stop, READ_WATCHER)

    # ---------------------------------------------------------------------------- helpers
    def guard(self, what: str) -> StallGuard:
        return StallGuard(f"{what} at destination {self.name}", self.rule, self.stop)

    def call(
        self, what: str, call: Callable[[], T], *, missing: str | None = None, sending: int = 0
    ) -> T:
        """``call()`` under the stall guard, retried with back-off; errors translated.

        An SDK call reports no progress until it returns, so a request whose body is
        ``sending`` bytes counts them when it starts: it is cut only when it outlasts the
        window after the one they were counted in.
        """

        def attempt() -> T:
            guard = self.guard(what)
            with tracking() as connections, guard.watch(connections.abort):
                guard.progress(sending)
                try:
                    return call()
                except Exception:
                    if guard.tripped:
                        raise guard.error() from None
                    raise

        try:
            return retry(
                attempt,
                retryable=transient,
                deadline=self.retry_deadline,
                first=0.5,
                cap=8.0,
                stop=self.stop,
            )
        except BackupError:
            raise
        except Exception as exc:
            error = self.errors.translate(exc, what, missing=missing)
            if transient(exc):
                reason = "gave up after retrying"
                if self.stop.is_set():
                    reason = "interrupted: service-backup is shutting down"
                error = type(error)(f"{error} ({reason})")
            raise error from None

    def where(self, key: str) -> str:
        return f"{self.bucket_name}/{self.layout.full(key)}"

    def missing(self, key: str) -> str:
        return f"{key} not found in bucket {self.bucket_name}" + (
            f" under {self.layout.base}" if self.layout.base else ""
        )

    def discard(self, name: str) -> None:
        """Best effort: the error raised next says what failed."""
        with contextlib.suppress(Exception):
            self.bucket.delete_blob(name, timeout=self.timeout, retry=None)

    def media_url(self, name: str) -> str:
        """The media GET of the object ``name`` (a full name, ``layout.full``; quoted here: the
        emulator's mediaLink is not encoded, so a '#' or '?' in a name would break it)."""
        return f"{self._media_base}{urllib.parse.quote(name, safe='')}?alt=media"

    def media_get(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        """A streamed GET of ``url`` (from ``media_url``) on the session's connection pool.

        What ``session.get`` does, minus the layers that change nothing here but cost about
        a third of the client's work per small object (callgrind, 1.74M -> ~1.2M
        instructions per 16 KiB read): merging the session's headers, cookies, hooks and
        proxy settings into a new request, re-quoting a URL that is already encoded, and
        wrapping urllib3's answer in a ``requests.Response`` (its cookie extraction and
        header copy). The request carries the session's headers and the credentials' own
        (``_authorized``: ``before_request`` refreshes an expiring token, as
        ``AuthorizedSession`` does, its headers reused for a moment). It
        goes out through the pool of the session's own adapter (found once through
        ``HTTPAdapter.get_connection_with_tls_context``, so proxy, TLS verification and the
        stall guard's abortable connections are the session's), with the adapter's retry
        setting, no redirects and the body left undecoded, as ``HTTPAdapter.send`` sends it.
        """
        request_headers = self._authorized(url)
        if headers:
            request_headers.update(headers)
        target = url if self._media_full_url else url[self._media_origin_length :]
        try:
            return self._media_pool.urlopen(
                "GET",
                target,
                headers=request_headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=self._media_adapter.max_retries,
                timeout=self._media_timeout,
            )
        except urllib3.exceptions.ClosedPoolError:
            # The pool manager dropped the pool (too many hosts): take the current one.
            self._media_pool = self._pool_for(self._media_base)
            raise

    def _authorized(self, url: str) -> dict[str, str | bytes]:
        """A new dict of the session's headers plus the credentials' own, for a GET of ``url``.

        ``credentials.before_request`` (refresh when due, then apply the token) makes them;
        what it made is reused for ``auth_reuse_seconds`` (``AUTH_REUSE_SECONDS``), well
        inside the minutes of life google-auth leaves a token it does not refresh.
        """
        now = time.monotonic()
        made = self._media_auth
        if made is None or now - made[0] >= self.auth_reuse_seconds:
            headers = dict(self._media_headers)
            self.session.credentials.before_request(self.auth_request, "GET", url, headers)
            self._media_auth = made = (now, headers)
        return dict(made[1])

    def _pool_for(self, url: str) -> Any:
        """The adapter's connection pool for ``url``, TLS settings applied as ``send`` does."""
        prepared = requests.Request("GET", url).prepare()
        verify, cert = self.session.verify, self.session.cert
        pool = self._media_adapter.get_connection_with_tls_context(
            prepared, verify, proxies=self.session.proxies, cert=cert
        )
        self._media_adapter.cert_verify(pool, url, verify, cert)
        return pool

    def media_error(self, url: str, response: urllib3.BaseHTTPResponse) -> Exception:
        """The SDK's exception for an unexpected media GET answer (its body read, closed)."""
        prepared = requests.Request("GET", url).prepare()
        with self._media_adapter.build_response(prepared, response) as wrapped:
            return api_exceptions.from_http_response(wrapped)

    def _get_json(self, url: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON API GET through the guarded session; None for a 404."""
        response = self.session.get(url, params=params, timeout=self.timeout)
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise api_exceptions.from_http_response(response)
            body = response.json()
        return body if isinstance(body, dict) else {}

    # ---------------------------------------------------------------------- the interface
    def describe(self, prefix: str) -> str:
        return self.layout.describe(self.bucket_name, prefix)

    def ensure_location(self) -> None:
        def existing() -> storage.Bucket | None:
            try:
                return self._client.get_bucket(self.bucket_name, timeout=self.timeout, retry=None)
            except api_exceptions.NotFound:
                return None

        if self.call(f"checking bucket {self.bucket_name}", existing) is not None:
            return
        bucket = self._client.bucket(self.bucket_name)
        bucket.storage_class = self.storage_class

        def create() -> bool:
            try:
                self._client.create_bucket(
                    bucket,
                    project=self.project_id,
                    location=self.location,
                    timeout=self.timeout,
                    retry=None,
                )
            except api_exceptions.Conflict:
                return False
            return True

        what = (
            f"creating bucket {self.bucket_name} in project {self.project_id} "
            f"({self.location}, {self.storage_class})"
        )
        if self.call(what, create):
            return
        # Created meanwhile (another VM's run) is fine; owned by someone else is not.
        try:
            found = self.call(f"checking bucket {self.bucket_name}", existing)
        except DestinationError as exc:
            found, reason = None, str(exc)
        else:
            reason = "not visible to these credentials"
        if found is None:
            raise self.errors.error(
                f"bucket name {self.bucket_name} is taken by another project ({reason})"
            )

    def write(self, key: str, source: Source) -> ObjectInfo:
        name = self.layout.full(key)
        what = f"upload of {self.bucket_name}/{name}"
        if source.size > SINGLE_REQUEST_LIMIT:
            with source.open() as stream:
                resource = StreamedUpload(self, name, stream, source.size, what).run()
            return ObjectInfo(
                key=key, size=int(resource["size"]), modified=_timestamp(resource.get("updated"))
            )
        data = source.read_all()  # SourceError (short, grown, changed) before anything is sent
        blob = self.bucket.blob(name)
        self.call(
            what,
            lambda: blob.upload_from_string(
                data,
                content_type=CONTENT_TYPE,
                checksum="crc32c",  # sent with the object; GCS refuses a mismatch
                timeout=self.timeout,
                retry=None,
            ),
            sending=len(data),
        )
        return ObjectInfo(
            key=key, size=blob.size if blob.size is not None else -1, modified=blob.updated
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for item in self._items(self.layout.full_prefix(prefix), "name,size,updated"):
            yield ObjectInfo(
                key=self.layout.key_of(item["name"]),
                size=int(item.get("size") or 0),
                modified=_timestamp(item.get("updated")),
            )

    def list_folders(self, prefix: str) -> Iterator[str]:
        """One listing with ``delimiter=/``: the folders' names (``prefixes``), not their
        objects."""
        name_prefix = self.layout.full_prefix(prefix)
        for page in self._pages(name_prefix, "items(name),prefixes", delimiter="/"):
            for folder in page.get("prefixes") or []:
                name = folder[len(name_prefix) :].removesuffix("/")
                if name:
                    yield name

    def _items(self, name_prefix: str, fields: str) -> Iterator[dict[str, Any]]:
        """The JSON API's object resources under ``name_prefix`` (a full name prefix)."""
        for page in self._pages(name_prefix, f"items({fields})"):
            yield from page.get("items") or []

    def _pages(
        self, name_prefix: str, fields: str, delimiter: str = ""
    ) -> Iterator[dict[str, Any]]:
        """The JSON API's listing pages under ``name_prefix``, with ``fields`` of each."""
        url = (
            f"{self._client.api_endpoint}/storage/v1/b/"
            f"{urllib.parse.quote(self.bucket_name, safe='')}/o"
        )
        what = f"listing {self.bucket_name}/{name_prefix}"
        params: dict[str, Any] = {
            "maxResults": self.list_page_size,
            "fields": f"{fields},nextPageToken",
        }
        if name_prefix:
            params["prefix"] = name_prefix
        if delimiter:
            params["delimiter"] = delimiter
        while True:
            page = self.call(what, functools.partial(self._get_json, url, params))
            if page is None:
                return  # no bucket yet: nothing stored
            yield page
            token = page.get("nextPageToken")
            if not token:
                return
            params = {**params, "pageToken": token}

    # ------------------------------------------------------ promotion (promote_by_copy)
    @property
    def can_rename(self) -> bool:
        """``promote_by_copy``: same-day re-runs are staged, then promoted by server-side copy."""
        return self.promote_by_copy

    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """Promote staged objects: a server-side rewrite of each, checked, then the staged deleted.

        The staged objects are listed once (size, CRC32C, generation). Each is rewritten to
        its final name (``objects.rewrite``, called again with the returned token until done:
        GCS copies large objects, or across locations and classes, in several calls), pinned
        to the listed generation (a staged object replaced meanwhile is never promoted),
        ``file_concurrency`` at a time. The rewritten object's size and CRC32C, as GCS reports
        them, must be the staged object's; then the staged objects are deleted.
        """
        if not moves:
            return
        fulls = [(self.layout.full(old), self.layout.full(new)) for old, new in moves]
        start = common_folder(old for old, _ in fulls)
        staged = {item["name"]: item for item in self._items(start, "name,size,crc32c,generation")}
        for old, _ in fulls:
            if old not in staged:
                raise ObjectNotFound(f"{old} not found in bucket {self.bucket_name}")

        def promote(old: str, new: str) -> None:
            self._rewrite(old, new, staged[old])

        def delete(old: str, _: str) -> None:
            self.call(
                f"deleting staged {self.bucket_name}/{old}",
                lambda: self.bucket.delete_blob(old, timeout=self.timeout, retry=None),
                missing=f"{old} not found in bucket {self.bucket_name}",
            )

        with ThreadPoolExecutor(self.file_concurrency, thread_name_prefix="gcs-promote") as pool:
            for step in (promote, delete):
                futures = [pool.submit(step, old, new) for old, new in fulls]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise

    def _rewrite(self, old: str, new: str, found: dict[str, Any]) -> None:
        source, target = self.bucket.blob(old), self.bucket.blob(new)
        what = f"promotion of {self.bucket_name}/{old} to {new}"
        token: str | None = None
        while True:

            def step(token: str | None = token) -> tuple[str | None, int, int]:
                return target.rewrite(  # type: ignore[no-any-return]
                    source,
                    token=token,
                    if_source_generation_match=int(found["generation"]),
                    timeout=self.timeout,
                    retry=None,
                )

            token, _, _ = self.call(what, step)
            if token is None:
                break
        size = int(found.get("size") or 0)
        if target.size != size or (found.get("crc32c") and target.crc32c != found["crc32c"]):
            raise DestinationError(
                f"{what}: the copy has {target.size} bytes and CRC32C {target.crc32c}, the "
                f"staged object {size} bytes and CRC32C {found.get('crc32c')}: the copy differs"
            )

    def _get(self, key: str) -> storage.Blob:
        blob = self.call(
            f"reading {self.where(key)}",
            lambda: self.bucket.get_blob(self.layout.full(key), timeout=self.timeout, retry=None),
            missing=self.missing(key),
        )
        if blob is None:
            raise ObjectNotFound(self.missing(key))
        return blob

    def open_read(self, key: str) -> IO[bytes]:
        """One media GET; its answer gives the generation, size and CRC32C (``_download``).

        No metadata GET first: per small object that request cost as much as the read. The
        stream is unbuffered: ``read(n)`` hands over what the connection has, up to ``n``.
        """
        name = self.layout.full(key)
        return StreamedRead(self, key, name, self.media_url(name))  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo:
        blob = self._get(key)
        return ObjectInfo(key=key, size=blob.size or 0, modified=blob.updated)

    def delete(self, key: str) -> None:
        self.call(
            f"deleting {self.where(key)}",
            lambda: self.bucket.delete_blob(
                self.layout.full(key), timeout=self.timeout, retry=None
            ),
            missing=self.missing(key),
        )

    def close(self) -> None:
        self.reads.close()
        self.session.close()
        self._client.close()


def _timestamp(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
