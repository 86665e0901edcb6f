"""The HTTP transport under the Azure SDK: one pooled session, and transfers that can be aborted.

Why this exists: the SDK bounds single socket operations (connect and read timeouts) but not a
request as a whole, so an endpoint that accepts a connection and then trickles one byte every
few seconds, or swallows the upload, holds a write for many minutes, and a retry policy's
back-off sleeps cannot be interrupted at shutdown. The core's ``StallGuard`` watches progress
from outside; this module gives it the two things it needs:

* progress: every piece of a request body (at most ``PIECE`` bytes) that reaches the socket is
  counted for the write (the ``Transfer``) whose thread sent it, so a slow but moving link is
  told apart from a dead one even while one 4 MiB block is on its way;
* abort: the connections a transfer's requests are using at that moment are shut down (the
  blocked ``send``/``recv`` returns at once), any back-off sleep of the SDK's retry policy
  ends (``AbortableRetry``), and no further request of that transfer starts (``Aborted``).

Which transfer a request belongs to is a thread-local binding: a write binds its own thread,
and each of its block workers binds itself, for the duration of the SDK call.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any, Final

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ExponentialRetry
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from service_backup import tls
from service_backup.stall import StallGuard

#: Largest piece of a request body handed to the socket at once (the progress granularity).
PIECE: Final = 64 * 1024

_local = threading.local()


class Aborted(Exception):
    """A transfer's request was refused or cut short because the transfer was aborted.

    Not an ``AzureError`` on purpose: the SDK's retry policy lets it through unretried.
    """


class Transfer:
    """One write: its stall guard, and the connections its requests are using right now."""

    def __init__(self, guard: StallGuard) -> None:
        self.guard = guard
        self.aborted = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[HTTPConnection] = set()

    def abort(self) -> None:
        """From the guard's timer thread: cut every in-flight request of this transfer."""
        self.aborted.set()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            sock = connection.sock
            if isinstance(sock, socket.socket):
                # socket.socket's shutdown, not SSLSocket's: no TLS state is touched from here.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def check(self) -> None:
        if self.aborted.is_set():
            raise Aborted()

    @contextlib.contextmanager
    def bound(self) -> Iterator[Transfer]:
        """Requests made by this thread inside the block belong to this transfer."""
        previous = getattr(_local, "transfer", None)
        _local.transfer = self
        try:
            yield self
        finally:
            _local.transfer = previous

    def _attach(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.add(connection)
        attached: list[HTTPConnection] = _local.attached
        attached.append(connection)

    def _detach(self, connections: list[HTTPConnection]) -> None:
        with self._lock:
            self._connections.difference_update(connections)


def _current() -> Transfer | None:
    transfer: Transfer | None = getattr(_local, "transfer", None)
    if transfer is not None and getattr(_local, "attached", None) is None:
        return None  # outside a transport send (should not happen): do not track
    return transfer


class _Tracked:
    """Mixin for urllib3 connections: belong to the current transfer, send in counted pieces."""

    def connect(self) -> None:
        transfer = _current()
        if transfer is not None:
            transfer._attach(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        transfer = _current()
        if transfer is not None:
            transfer._attach(self)  # type: ignore[arg-type]
            transfer.check()
        super().request(*args, **kwargs)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        transfer = _current()
        if transfer is None or not isinstance(data, bytes | bytearray | memoryview):
            super().send(data)  # type: ignore[misc]
            return
        view = memoryview(data).cast("B")
        for start in range(0, len(view), PIECE):
            piece = view[start : start + PIECE]
            super().send(piece)  # type: ignore[misc]
            # Raises once the guard tripped or shutdown began: the request ends here.
            transfer.guard.progress(len(piece))


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


_POOLS: Final = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class _TrackedAdapter(HTTPAdapter):
    """requests' adapter, with pools whose connections are tracked (also through a proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


class AbortableTransport(RequestsTransport):
    """azure-core's requests transport, aware of the transfer each request belongs to."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        transfer: Transfer | None = getattr(_local, "transfer", None)
        if transfer is None:
            return super().send(request, **kwargs)
        transfer.check()
        _local.attached = []
        try:
            return super().send(request, **kwargs)
        finally:
            transfer._detach(_local.attached)
            _local.attached = None
            transfer.check()  # a request cut by an abort ends as Aborted, not as a socket error


class AbortableRetry(ExponentialRetry):
    """The storage SDK's exponential retry, whose back-off sleep ends when the transfer aborts.

    The sleep is the policy's (blob clients wrap the transport, so a transport's own ``sleep``
    is never called for them).
    """

    def increment(
        self, settings: Any, request: Any, response: Any = None, error: Any = None
    ) -> bool:
        """No retry for a refused certificate: the next attempt would be refused the same way."""
        if error is not None and tls.untrusted_reason(error) is not None:
            return False
        return bool(super().increment(settings, request, response=response, error=error))

    def sleep(self, settings: Any, transport: Any) -> None:
        transfer: Transfer | None = getattr(_local, "transfer", None)
        if transfer is None:
            super().sleep(settings, transport)
            return
        backoff = self.get_backoff_time(settings)
        if backoff and backoff > 0 and transfer.aborted.wait(backoff):
            raise Aborted()
        transfer.check()


def ca_bundle() -> str | bool:
    """What the transport verifies servers against: the OS trust store (``service_backup.tls``).

    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` still win when set. Given to the transport as
    ``connection_verify``: azure-core passes its own ``verify`` with every request (``True``,
    i.e. certifi, by default), which would override a bundle set on the session.
    """
    return tls.requests_verify()


class LeanSession(requests.Session):
    """A ``requests.Session`` whose ``request`` does only what the SDK's requests need.

    Why: azure-core's transport sends every request through ``Session.request``, which builds
    a ``Request``, merges the session's cookies, hooks, params and auth into it, re-reads the
    settings it merged, and after the answer persists cookies and looks for a redirect to
    follow. None of that applies to the SDK's requests (no params, cookies, hooks or auth of
    their own, redirects left to the SDK's policy, ``trust_env`` off); it was about 0.7M of
    the 4.0M instructions a small blob's read cost (callgrind, 200 reads on Azurite).

    What is kept: the request is prepared by requests' own ``PreparedRequest`` steps (method,
    URL, the session's default headers under the request's, body, auth from the URL, default
    hooks) and sent by the mounted adapter with the session's proxies, ``verify``, ``cert``
    and ``stream`` merged as ``Session.request`` merges them; a ``Set-Cookie`` answer is still
    kept in the session's jar, and a non-streamed body is read before returning. Any call
    using what is skipped (params, cookies, files, json, auth, hooks, redirects, proxies per
    call, a session with auth, params, hooks or cookies, ``trust_env``) takes
    ``Session.request`` unchanged.
    """

    def request(  # type: ignore[override]
        self,
        method: str,
        url: Any,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        cookies: Any = None,
        files: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        proxies: Any = None,
        hooks: Any = None,
        stream: bool | None = None,
        verify: Any = None,
        cert: Any = None,
        json: Any = None,
    ) -> requests.Response:
        if (
            params
            or cookies
            or files
            or auth
            or hooks
            or json is not None
            or allow_redirects
            or proxies
            or not isinstance(url, str)
            or self.trust_env
            or self.auth
            or self.params
            or len(self.cookies)
            or any(self.hooks.values())
        ):
            return super().request(
                method, url, params=params, data=data, headers=headers, cookies=cookies,
                files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert,
                json=json,
            )  # fmt: skip
        merged = CaseInsensitiveDict(self.headers)
        if headers:
            merged.update(headers)
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method.upper())
        prepared.prepare_url(url, None)
        prepared.prepare_headers({k: v for k, v in merged.items() if v is not None})
        prepared.prepare_body(data, None, None)
        prepared.prepare_auth(None, url)
        prepared.prepare_hooks(None)
        stream = self.stream if stream is None else stream
        response = self.get_adapter(prepared.url or url).send(
            prepared,
            stream=bool(stream),
            timeout=timeout,
            verify=self.verify if verify is None else verify,
            cert=self.cert if cert is None else cert,
            proxies=dict(self.proxies),
        )
        if "set-cookie" in response.raw.headers:
            extract_cookies_to_jar(self.cookies, prepared, response.raw)
        if not stream:
            response.content  # noqa: B018 - read now, as Session.send does
        return response


def session(url: str, pool_size: int) -> requests.Session:
    """A session sized for every request the uploads can have in flight at once.

    The proxy environment (``HTTPS_PROXY``/``NO_PROXY``) is honoured as requests would, but
    read once here: with ``trust_env`` requests re-reads every variable and ``~/.netrc`` on
    each request, a large share of the client's CPU per small file. A ``LeanSession``: the
    rest of ``Session.request``'s per-call work is skipped too.
    """
    result = LeanSession()
    result.trust_env = False
    result.proxies.update(requests.utils.get_environ_proxies(url))
    adapter = _TrackedAdapter(
        pool_connections=2,
        pool_maxsize=pool_size,
        # The SDK's retry policy does the retrying; urllib3 must not retry underneath it.
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    result.mount("http://", adapter)
    result.mount("https://", adapter)
    return result
