"""Local servers the notification tests talk to: a recording HTTP server and an SMTP server.

``http_server`` is one ``ThreadingHTTPServer`` on a free loopback port that records every
request (method, path, query, headers, body) and answers with the statuses it is told, in
order (then 200), or — ``hang=True`` — accepts the request and never answers until the
server is closed. It speaks what a healthchecks ping and an apprise ``json://`` webhook need.
``smtp_server`` is aiosmtpd's threaded controller with a LOGIN/PLAIN authenticator that accepts
one user and records every message.

No pytest import: plain context managers.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.message
import email.policy
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import free_port


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def basic_auth(self) -> tuple[str, str] | None:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password


@dataclass
class HttpServer:
    port: int
    statuses: list[int]
    hang: bool
    requests: list[Request] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    release: threading.Event = field(default_factory=threading.Event)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def record(self, request: Request) -> int:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            return self.statuses.pop(0) if self.statuses else 200

    def wait_for(self, count: int, timeout: float = 10) -> list[Request]:
        """The first ``count`` requests, waiting for them to arrive (an event, not a sleep)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


def _handler(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urllib.parse.urlsplit(self.path)
            status = server.record(
                Request(
                    method=self.command,
                    path=parts.path,
                    query=dict(urllib.parse.parse_qsl(parts.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            if server.hang:
                server.release.wait()
                return
            answer = b"OK" if status < 400 else b"nope"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def http_server(
    statuses: list[int] | None = None, hang: bool = False, tls: tuple[str, str] | None = None
) -> Iterator[HttpServer]:
    """``tls`` = (certificate file, key file) serves HTTPS."""
    state = HttpServer(port=0, statuses=list(statuses or []), hang=hang)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        state.scheme = "https"
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="notify-http", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    login: str | None
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "the e-mail has no text/plain part"
        return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class SmtpServer:
    port: int
    user: str
    password: str
    mails: list[Mail] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 10) -> list[Mail]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.mails) >= count, timeout)
            return list(self.mails)


@contextlib.contextmanager
def smtp_server(user: str, password: str) -> Iterator[SmtpServer]:
    """aiosmtpd on a free port: plain SMTP with AUTH (no TLS needed), recording messages."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    state = SmtpServer(port=free_port(), user=user, password=password)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == user
            and data.password.decode() == password
        )
        login = data.login.decode() if isinstance(data, LoginPassword) else "?"
        state.logins.append((login, ok))
        return AuthResult(success=ok, auth_data=login if ok else None)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            with state._changed:
                state.mails.append(
                    Mail(envelope.mail_from, list(envelope.rcpt_tos), session.auth_data, message)  # type: ignore[arg-type]
                )
                state._changed.notify_all()
            return "250 OK"

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=state.port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield state
    finally:
        controller.stop()
