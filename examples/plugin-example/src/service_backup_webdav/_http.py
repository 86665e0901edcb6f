"""A small WebDAV client on ``http.client``: a connection pool, streamed PUT, PROPFIND parsing.

No HTTP library is needed for five verbs, and ``http.client`` lets the PUT body be sent in
bounded chunks straight from the source file, with errors from the file kept apart from
errors from the network (the core reports the first as a source problem, the second as a
destination problem).
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import IO

import attrs
from defusedxml.ElementTree import iterparse

from service_backup.errors import DestinationError

CHUNK = 1024 * 1024
DAV = "{DAV:}"
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/>"
    b"</D:prop></D:propfind>"
)
#: A reused keep-alive connection the server already closed fails with one of these; the
#: request is then sent once more on a fresh connection.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@attrs.frozen
class Response:
    status: int
    reason: str
    body: bytes = b""


@attrs.frozen
class Entry:
    """One ``<D:response>`` of a PROPFIND: its (still percent-encoded) href and properties."""

    href: str
    is_collection: bool
    size: int
    modified: object = None


class Unreachable(DestinationError):
    """The server did not answer (refused, timed out, TLS failed): no point asking again."""


class _SourceFailed(Exception):
    """Carries an exception raised by the caller's stream through the HTTP code."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Client:
    """HTTP/1.1 keep-alive connections to one server, shared by the upload threads."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        timeout: float,
        username: str = "",
        password: str = "",
        ca_cert: str = "",
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.where = f"{host}:{port}" if port else host
        self._tls: ssl.SSLContext | None = None
        if scheme == "https":
            self._tls = ssl.create_default_context()
            if ca_cert.strip():
                try:
                    self._tls.load_verify_locations(cadata=ca_cert)
                except (ssl.SSLError, ValueError) as exc:
                    raise DestinationError(f"ca_cert is not a PEM certificate: {exc}") from None
        self._headers = {"User-Agent": "service-backup-webdav"}
        if username or password:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------- connections
    def _connect(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._tls, blocksize=CHUNK
            )
        return http.client.HTTPConnection(
            self.host, self.port, timeout=self.timeout, blocksize=CHUNK
        )

    def _acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _release(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> None:
        if response.will_close:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def unreachable(self, exc: BaseException) -> Unreachable:
        """A network failure as one line naming the server (never the request headers)."""
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self.timeout:g}s"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            reason = f"TLS certificate not trusted ({exc.verify_message})"
        elif isinstance(exc, socket.gaierror):
            reason = "host name not found"
        elif isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
        else:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return Unreachable(f"cannot reach WebDAV server {self.where}: {reason}")

    # -------------------------------------------------------------------------- requests
    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        """Send a request with a small body and read the whole (small) answer."""
        for attempt in (1, 2):
            conn, reused = self._acquire()
            try:
                conn.request(method, path, body=body, headers={**self._headers, **(headers or {})})
                response = conn.getresponse()
                data = response.read()
            except STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise self.unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise self.unreachable(exc) from None
            self._release(conn, response)
            return Response(response.status, response.reason, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, path: str, stream: IO[bytes], size: int, what: str) -> Response:
        """PUT exactly ``size`` bytes read from ``stream`` (the core's exact-length source).

        Always on a fresh connection: a stale keep-alive connection cannot be retried once
        part of the body has been read from a stream that may not rewind. An exception the
        stream raises is re-raised unchanged (the core reports it as a source error).
        """
        conn = self._connect()
        try:
            conn.putrequest("PUT", path, skip_accept_encoding=True)
            for name, value in {**self._headers, "Content-Length": str(size)}.items():
                conn.putheader(name, value)
            conn.putheader("Content-Type", "application/octet-stream")
            conn.endheaders()
            remaining = size
            while remaining:
                try:
                    chunk = stream.read(min(CHUNK, remaining))
                except BaseException as exc:
                    raise _SourceFailed(exc) from None
                try:
                    conn.send(chunk)
                except STALE:
                    break  # the server answered early (e.g. 401, 507) and closed: read why
                remaining -= len(chunk)
            response = conn.getresponse()
            data = response.read()
        except _SourceFailed as failed:
            conn.close()
            raise failed.error from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self.unreachable(exc) from None
        conn.close()
        if remaining and 200 <= response.status < 300:
            raise DestinationError(f"PUT {what}: the server stopped reading the upload")
        return Response(response.status, response.reason, data)

    def get(self, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Start a GET; the caller reads the response and closes the connection."""
        conn = self._connect()
        try:
            conn.request("GET", path, headers=self._headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self.unreachable(exc) from None

    def propfind(self, path: str, depth: str) -> tuple[Response, list[Entry]]:
        """PROPFIND with ``Depth: depth``; the multistatus is parsed as it streams in."""
        headers = {
            **self._headers,
            "Depth": depth,
            "Content-Type": 'application/xml; charset="utf-8"',
        }
        for attempt in (1, 2):
            conn, reused = self._acquire()
            try:
                conn.request("PROPFIND", path, body=PROPFIND_BODY, headers=headers)
                response = conn.getresponse()
                if response.status == 207:
                    entries = list(_parse_multistatus(response))
                    response.read()  # anything after the document, so the connection is reusable
                else:
                    entries = []
                    response.read()
            except STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise self.unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise self.unreachable(exc) from None
            except Exception as exc:  # defusedxml / expat: the server sent something else
                conn.close()
                raise DestinationError(
                    f"WebDAV server {self.where} sent an unreadable PROPFIND answer for "
                    f"{path}: {type(exc).__name__}"
                ) from None
            self._release(conn, response)
            return Response(response.status, response.reason), entries
        raise AssertionError("unreachable")  # pragma: no cover


def _parse_multistatus(stream: IO[bytes]) -> Iterator[Entry]:
    """Each ``<D:response>`` of a 207 answer, element by element (memory per entry, not per
    listing). Only the ``200 OK`` propstat counts: servers report unknown properties apart."""
    for _event, element in iterparse(stream, events=("end",)):
        if element.tag != f"{DAV}response":
            continue
        href = element.findtext(f"{DAV}href", default="").strip()
        is_collection, size, modified = False, 0, None
        for propstat in element.findall(f"{DAV}propstat"):
            status = propstat.findtext(f"{DAV}status", default="")
            if " 200 " not in f"{status} ":
                continue
            prop = propstat.find(f"{DAV}prop")
            if prop is None:
                continue
            kind = prop.find(f"{DAV}resourcetype")
            if kind is not None and kind.find(f"{DAV}collection") is not None:
                is_collection = True
            length = (prop.findtext(f"{DAV}getcontentlength") or "").strip()
            if length.isdigit():
                size = int(length)
            stamp = (prop.findtext(f"{DAV}getlastmodified") or "").strip()
            if stamp:
                try:
                    modified = parsedate_to_datetime(stamp)
                except (TypeError, ValueError):
                    modified = None
        element.clear()
        if href:
            yield Entry(href=href, is_collection=is_collection, size=size, modified=modified)
