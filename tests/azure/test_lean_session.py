"""``LeanSession`` sends what ``requests.Session`` would send, for the calls the SDK makes.

A real local HTTP server records every request; the same call through a plain
``requests.Session`` and through the plugin's ``LeanSession`` must reach it identically
(method, path and query, headers, body), answers must come back the same, a ``Set-Cookie``
must still be kept and sent again, and calls using what the lean path skips must still work.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from azure.core.utils import CaseInsensitiveDict

from service_backup_azure._transport import LeanSession, session


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, list[tuple[str, str]], bytes]]
    cookie: str | None

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, list(self.headers.items()), body))
        payload = b"answer:" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", "r-1")
        if self.cookie:
            self.send_header("Set-Cookie", self.cookie)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"seen": [], "cookie": None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _sdk_call(http: requests.Session, url: str, method: str, data: Any, stream: bool) -> Any:
    """The call azure-core's ``RequestsTransport.send`` makes."""
    headers = CaseInsensitiveDict(
        {"x-ms-version": "2025-01-05", "User-Agent": "azsdk-python test", "x-ms-blob-type": "X"}
    )
    return http.request(
        method,
        url,
        headers=headers,
        data=data,
        files=None,
        verify=True,
        timeout=(5, 5),
        cert=None,
        allow_redirects=False,
        proxies=None,
        stream=stream,
    )


@pytest.mark.parametrize(
    ("method", "data", "stream"),
    [("GET", None, True), ("GET", None, False), ("PUT", b"x" * 1000, False), ("HEAD", None, False)],
)
def test_lean_session_sends_what_requests_sends(
    server: tuple[str, type[_Recorder]], method: str, data: bytes | None, stream: bool
) -> None:
    base, handler = server
    url = f"{base}/devstoreaccount1/c/a%20b/%C3%A9?comp=list&sig=a%2Bb"
    plain, lean = requests.Session(), session(base, 4)
    plain.trust_env = False
    assert isinstance(lean, LeanSession)
    with plain, lean:
        answers = [_sdk_call(http, url, method, data, stream) for http in (plain, lean)]
        bodies = [answer.raw.read() if stream else answer.content for answer in answers]
    (want, got) = handler.seen
    assert got == want, f"LeanSession sent {got}, requests.Session sent {want}"
    assert answers[1].elapsed == datetime.timedelta(0), (
        "the call went through Session.send (elapsed set): the lean path was not taken"
    )
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["x-ms-request-id"] == "r-1"
    if method != "HEAD":
        assert bodies[0] == bodies[1] == b"answer:" + (data or b""), f"bodies differ: {bodies}"


def test_a_cookie_set_by_the_server_is_kept_and_sent_again(
    server: tuple[str, type[_Recorder]],
) -> None:
    base, handler = server
    handler.cookie = "affinity=node-7; Path=/"
    with session(base, 4) as lean:
        _sdk_call(lean, f"{base}/a", "GET", None, False)
        handler.cookie = None
        _sdk_call(lean, f"{base}/b", "GET", None, False)
    sent = dict(handler.seen[1][2])
    assert sent.get("Cookie") == "affinity=node-7", (
        f"the cookie set by the first answer was not sent again: {sent}"
    )


def test_calls_using_what_the_lean_path_skips_still_work(
    server: tuple[str, type[_Recorder]],
) -> None:
    base, handler = server
    with session(base, 4) as lean:
        answer = lean.get(f"{base}/p", params={"q": "1 2"}, cookies={"c": "v"})
    assert answer.status_code == 200
    method, path, headers, _ = handler.seen[0]
    assert (method, path) == ("GET", "/p?q=1+2"), f"params were lost: {method} {path}"
    assert dict(headers).get("Cookie") == "c=v", f"the call's cookie was lost: {headers}"
