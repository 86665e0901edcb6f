"""A local server speaking the Cloud Foundry protocol the alerter uses: CC, UAA, notifications.

One ``ThreadingHTTPServer`` in a thread of the test process, on a free loopback port, plain HTTP
or TLS. The three services live under path prefixes of the same origin (``/cc``, ``/uaa``,
``/notifications``), which also proves the client joins paths onto configured URLs rather than
replacing them. Every request is recorded (method, path, query, headers, body); tokens are
issued and checked like the real services do, so a wrong credential or a token sent to the
wrong service is refused. ``fail`` injects answers (500s, a router 404) ahead of the real ones.

No pytest import: a plain context manager, usable from a REPL or a benchmark.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CC_USER, CC_PASSWORD = "backup-alerts", "cc-password-5f3e1c"
CLIENT_ID, CLIENT_SECRET = "backup-notifications", "client-secret-9a7b2d"
ORG, ORG_GUID = "system", "org-guid-1111"
SPACE, SPACE_GUID = "redis-alerts", "space-guid-2222"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode()))

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        query = urllib.parse.urlencode(self.query, doseq=True)
        return f"{self.method} {self.path}{'?' + query if query else ''}"


@dataclass
class Fault:
    method: str
    path_prefix: str
    status: int
    times: int | None  # None: for ever
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    exact: bool = False


@dataclass
class CfServer:
    base_url: str
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=lambda: {CC_USER: CC_PASSWORD})
    clients: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: CLIENT_SECRET})
    orgs: dict[str, str] = field(default_factory=lambda: {ORG: ORG_GUID})
    spaces: dict[str, dict[str, str]] = field(
        default_factory=lambda: {ORG_GUID: {SPACE: SPACE_GUID}}
    )
    #: The Cloud Controller APIs served: a modern foundation has both, an old one only v2, a
    #: foundation that disabled v2 only v3.
    apis: frozenset[str] = frozenset({"v2", "v3"})
    cc_tokens: set[str] = field(default_factory=set)
    notification_tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cc_url(self) -> str:
        return self.base_url + "/cc"

    @property
    def uaa_url(self) -> str:
        return self.base_url + "/uaa"

    @property
    def notifications_url(self) -> str:
        return self.base_url + "/notifications"

    def fail(
        self,
        method: str,
        path_prefix: str,
        status: int,
        times: int | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        exact: bool = False,
    ) -> None:
        """Answer matching requests with ``status`` (``times`` times, or for ever).

        ``path_prefix`` matches every path it starts, or with ``exact`` only itself (the
        Cloud Controller root ``/cc/``).
        """
        with self.lock:
            self.faults.append(
                Fault(method, path_prefix, status, times, headers or {}, body, exact)
            )

    def issued_tokens(self) -> set[str]:
        with self.lock:
            return self.cc_tokens | self.notification_tokens

    def notifications(self) -> list[Recorded]:
        return [
            r for r in self.requests if r.method == "POST" and r.path.startswith("/notifications/")
        ]

    # --- request handling (called from server threads) ---

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.exact:
                    matches = path == fault.path_prefix
                else:
                    matches = path.startswith(fault.path_prefix)
                if fault.method == method and matches:
                    if fault.times is None:
                        return fault
                    if fault.times > 0:
                        fault.times -= 1
                        return fault
        return None

    def handle(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append(request)
        fault = self._fault_for(request.method, request.path)
        if fault is not None:
            return fault.status, fault.headers, fault.body
        route = (request.method, request.path)
        if route == ("GET", "/cc/") and "v3" in self.apis:
            return _json(200, {"links": self._root_links()})
        if route == ("GET", "/cc/v2/info") and "v2" in self.apis:
            return _json(200, {"api_version": "2.150.0", "token_endpoint": self.uaa_url})
        v3_query = request.path in ("/cc/v3/organizations", "/cc/v3/spaces")
        if request.method == "GET" and v3_query and "v3" in self.apis:
            return self._cc_v3_query(request)
        if route == ("POST", "/uaa/oauth/token"):
            return self._token(request)
        if request.method == "GET" and request.path.startswith("/cc/v2/organizations"):
            if "v2" not in self.apis:
                return _json(404, {"error_code": "CF-V2Disabled"})
            return self._cc_query(request)
        if request.method == "POST" and request.path.startswith("/notifications/spaces/"):
            return self._notify(request)
        return _json(404, {"error": "not found", "path": request.path})

    def _token(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return _json(400, {"error": "invalid_request"})
        user, password = _basic(request.headers.get("authorization", ""))
        form = request.form()
        refused = _json(401, {"error": "unauthorized", "error_description": "Bad credentials"})
        token = secrets.token_hex(16)
        if form.get("grant_type") == "password":
            if (user, password) != ("cf", ""):
                return refused
            if self.users.get(form.get("username", "")) != form.get("password"):
                return refused
            with self.lock:
                self.cc_tokens.add(token)
        elif form.get("grant_type") == "client_credentials":
            if user not in self.clients or self.clients[user] != password:
                return refused
            with self.lock:
                self.notification_tokens.add(token)
        else:
            return _json(400, {"error": "unsupported_grant_type"})
        return _json(200, {"access_token": token, "token_type": "bearer", "expires_in": 599})

    def _cc_query(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        if _bearer(request) not in self.cc_tokens:
            return _json(401, {"code": 1000, "error_code": "CF-InvalidAuthToken"})
        query = request.query.get("q", [""])[0]
        if not query.startswith("name:"):
            return _json(400, {"error_code": "CF-BadQueryParameter"})
        name = query.removeprefix("name:")
        parts = request.path.removeprefix("/cc/v2/organizations").strip("/").split("/")
        if parts == [""]:
            guid = self.orgs.get(name)
        elif len(parts) == 2 and parts[1] == "spaces" and parts[0] in self.spaces:
            guid = self.spaces[parts[0]].get(name)
        else:
            return _json(404, {"error_code": "CF-NotFound"})
        resources = [{"metadata": {"guid": guid}, "entity": {"name": name}}] if guid else []
        return _json(200, {"total_results": len(resources), "resources": resources})

    def _root_links(self) -> dict[str, Any]:
        links: dict[str, Any] = {
            "self": {"href": self.cc_url},
            "cloud_controller_v3": {"href": self.cc_url + "/v3", "meta": {"version": "3.180.0"}},
            "uaa": {"href": self.uaa_url},
            "login": {"href": self.uaa_url},
        }
        if "v2" in self.apis:
            links["cloud_controller_v2"] = {"href": self.cc_url + "/v2"}
        return links

    def _cc_v3_query(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        if _bearer(request) not in self.cc_tokens:
            return _json(401, {"errors": [{"code": 1000, "title": "CF-InvalidAuthToken"}]})
        names = request.query.get("names", [""])[0]
        if request.path.endswith("/organizations"):
            guid = self.orgs.get(names)
        else:
            org = request.query.get("organization_guids", [""])[0]
            guid = self.spaces.get(org, {}).get(names)
        resources = [{"guid": guid, "name": names}] if guid else []
        return _json(200, {"pagination": {"total_results": len(resources)}, "resources": resources})

    def _notify(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        if _bearer(request) not in self.notification_tokens:
            return _json(401, {"errors": ["Authorization header is invalid"]})
        if request.headers.get("x-notifications-version") != "1":
            return _json(404, {"errors": ["missing X-NOTIFICATIONS-VERSION"]})
        space = request.path.removeprefix("/notifications/spaces/")
        if space not in {g for spaces in self.spaces.values() for g in spaces.values()}:
            return _json(404, {"errors": ["CloudController Error: space not found"]})
        try:
            body = request.json()
        except ValueError:
            return _json(422, {"errors": ["malformed JSON"]})
        if body.get("kind_id") != "service-alerts" or not body.get("text"):
            return _json(422, {"errors": ["kind_id and text are required"]})
        return _json(
            200, [{"recipient": "user-guid", "notification_id": "n-1", "status": "queued"}]
        )


def _json(status: int, document: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(document).encode()


def _basic(header: str) -> tuple[str, str]:
    if not header.startswith("Basic "):
        return "", "\0"
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    return user, password


def _bearer(request: Recorded) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: CfServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        recorded = Recorded(
            method=self.command,
            path=url.path,
            query=urllib.parse.parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        status, headers, payload = self.server.fake.handle(recorded)  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that drops a TLS handshake is part of the tests, not noise


@contextlib.contextmanager
def cf_server(tls: tuple[str, str] | None = None) -> Iterator[CfServer]:
    """Serve on a free loopback port; ``tls`` = (certificate file, key file) for HTTPS."""
    server = _Server(("127.0.0.1", 0), _Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    fake = CfServer(base_url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="cf-fake", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def self_signed_certificate(folder: str) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1/localhost, signed by itself; (cert, key) paths."""
    import datetime
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cf-fake.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(folder, "cf-fake.crt"), os.path.join(folder, "cf-fake.key")
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path
