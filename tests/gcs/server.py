"""gcp-storage-emulator plus a local OAuth2 token endpoint, for tests and benchmarks.

Self-contained on purpose (no pytest, nothing from the rest of ``tests``): the benchmark harness
imports it too. Usage::

    with gcs_emulator(folder) as server:
        server.endpoint              # http://127.0.0.1:<port>, the emulator (a subprocess)
        server.service_account_json  # a real key JSON whose token_uri is the local endpoint
        server.token_calls           # every token request the endpoint answered

The emulator does not check credentials at all, so the token endpoint is what makes the real
credential path run: it generates an RSA key pair, writes the private half into a
service-account JSON, and answers ``POST /token`` only when the RS256 JWT assertion verifies
against the public half (google-auth signs it with the audience ``GOOGLE_TOKEN_AUDIENCE``
whatever ``token_uri`` says). ``POST /refuse`` always answers ``invalid_grant``, as Google does
for a deleted key. The token endpoint is a small thread in the calling process; the emulator,
whose work is what gets measured, runs as a subprocess.

The emulator stores objects under ``folder`` (``in_memory=True`` keeps them in its memory).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.servers import stop

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PROJECT_ID = "service-backup-test"
CLIENT_EMAIL = f"backup@{PROJECT_ID}.iam.gserviceaccount.com"
START_TIMEOUT = 30.0


class EmulatorUnavailable(RuntimeError):
    """The emulator is not installed or did not start; the message says why."""


@dataclass(frozen=True)
class TokenCall:
    """One request the token endpoint answered."""

    path: str
    granted: bool
    client_email: str
    reason: str = ""


@dataclass(frozen=True)
class ServiceAccountKey:
    """A generated key: its private PEM and the JSON document google-auth reads."""

    client_email: str
    private_key_id: str
    private_key_pem: str
    public_key_pem: str

    def json(self, token_uri: str, project_id: str = PROJECT_ID, **extra: Any) -> str:
        return json.dumps(
            {
                "type": "service_account",
                "project_id": project_id,
                "private_key_id": self.private_key_id,
                "private_key": self.private_key_pem,
                "client_email": self.client_email,
                "client_id": "100000000000000000001",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": token_uri,
                **extra,
            },
            indent=2,
        )


def generate_key(client_email: str = CLIENT_EMAIL) -> ServiceAccountKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ServiceAccountKey(
        client_email=client_email,
        private_key_id=uuid.uuid4().hex,
        private_key_pem=private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        public_key_pem=private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )


class TokenEndpoint:
    """A threaded OAuth2 token endpoint that checks JWT assertions like Google's does."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.keys: dict[str, str] = {}  # client_email -> public key PEM
        self.calls: list[TokenCall] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                status, body = endpoint.answer(self.path, form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-endpoint", daemon=True
        )
        self._thread.start()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def refusing_token_uri(self) -> str:
        return f"{self.base_url}/refuse"

    def register(self, key: ServiceAccountKey) -> None:
        with self._lock:
            self.keys[key.client_email] = key.public_key_pem

    def granted_calls(self) -> list[TokenCall]:
        with self._lock:
            return [c for c in self.calls if c.granted]

    def _record(self, call: TokenCall) -> None:
        with self._lock:
            self.calls.append(call)

    def answer(self, path: str, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        assertion = (form.get("assertion") or [""])[0]
        try:
            issuer = str(jwt.decode(assertion, options={"verify_signature": False}).get("iss"))
        except jwt.PyJWTError:
            issuer = ""
        path = path.split("?", 1)[0]
        if path == "/refuse":
            self._record(TokenCall(path, False, issuer, "refused by configuration"))
            return 400, {"error": "invalid_grant", "error_description": "Account disabled."}
        if path != "/token":
            return 404, {"error": "not_found"}
        if (form.get("grant_type") or [""])[0] != JWT_BEARER_GRANT:
            self._record(TokenCall(path, False, issuer, "wrong grant_type"))
            return 400, {"error": "unsupported_grant_type"}
        public_key = self.keys.get(issuer)
        if public_key is None:
            self._record(TokenCall(path, False, issuer, "unknown service account"))
            return 400, {"error": "invalid_grant", "error_description": "Invalid grant."}
        try:
            jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                issuer=issuer,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            self._record(TokenCall(path, False, issuer, f"{type(exc).__name__}: {exc}"))
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        self._record(TokenCall(path, True, issuer))
        return 200, {
            "access_token": f"ya29.test-{uuid.uuid4().hex}",
            "expires_in": 3600,
            "token_type": "Bearer",
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@dataclass
class GCSServer:
    """A running emulator, its token endpoint and the registered service-account key."""

    host: str
    port: int
    folder: Path
    pid: int
    tokens: TokenEndpoint
    key: ServiceAccountKey
    project_id: str = PROJECT_ID

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return self.tokens.token_uri

    @property
    def service_account_json(self) -> str:
        """The key JSON a config carries; its token_uri is the verifying local endpoint."""
        return self.key.json(self.tokens.token_uri, self.project_id)

    @property
    def token_calls(self) -> list[TokenCall]:
        return list(self.tokens.calls)

    def unregistered_key_json(self) -> str:
        """A well-formed key the token endpoint does not know: wrong credentials."""
        return generate_key(self.key.client_email).json(self.tokens.token_uri, self.project_id)

    def refused_key_json(self) -> str:
        """The registered key, but its token endpoint refuses every grant."""
        return self.key.json(self.tokens.refusing_token_uri, self.project_id)

    def config(self, bucket_name: str, **extra: Any) -> dict[str, Any]:
        """A ``type: gcs`` destination ``config:`` mapping for this emulator."""
        return {
            "service_account_json": self.service_account_json,
            "project_id": self.project_id,
            "bucket_name": bucket_name,
            "endpoint": self.endpoint,
            **extra,
        }


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200 and response.read().strip() == b"OK")
    except (OSError, urllib.error.URLError):
        return False


def start_emulator(
    folder: Path, host: str = "127.0.0.1", in_memory: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``gcp-storage-emulator`` on a free port; wait until its health check answers."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    port = _free_port(host)
    command = [sys.executable, "-m", "gcp_storage_emulator", "-d", str(data), "start"]
    command += ["--host", host, "--port", str(port), "--quiet"]
    if in_memory:
        command.append("--in-memory")
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    log = open(folder / "emulator.log", "wb")  # noqa: SIM115 - the child owns it
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    except OSError as exc:
        raise EmulatorUnavailable(f"cannot start gcp-storage-emulator: {exc}") from None
    finally:
        log.close()
    deadline = time.monotonic() + START_TIMEOUT
    # The emulator announces nothing when quiet: its health check answering is the event.
    while not _healthy(f"http://{host}:{port}/"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            tail = (folder / "emulator.log").read_text(errors="replace")[-2000:]
            raise EmulatorUnavailable(
                f"gcp-storage-emulator did not start on {host}:{port} "
                f"(exit {process.returncode}): {tail.strip() or 'no output'}"
            )
        time.sleep(0.05)
    return process, port


@contextmanager
def gcs_emulator(folder: Path, *, in_memory: bool = False) -> Iterator[GCSServer]:
    """The emulator (subprocess) and a verifying token endpoint (thread), stopped on exit."""
    process, port = start_emulator(folder, in_memory=in_memory)
    tokens = TokenEndpoint()
    key = generate_key()
    tokens.register(key)
    try:
        yield GCSServer("127.0.0.1", port, folder, process.pid, tokens, key)
    finally:
        tokens.close()
        stop(process)


class MetadataServer:
    """A GCE metadata server on loopback: what google-auth asks on a GCP VM or a GKE pod.

    Answers only requests carrying ``Metadata-Flavor: Google`` (as the real one does), with
    that header on every answer (google-auth's "am I on GCE?" probe checks it). Point
    google-auth at it with ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP`` (``host:port``).
    """

    TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"

    def __init__(self, email: str = CLIENT_EMAIL, project_id: str = PROJECT_ID) -> None:
        self.email, self.project_id = email, project_id
        self.calls: list[tuple[str, bool]] = []  # (path, had the Metadata-Flavor header)
        self.tokens: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                flavored = self.headers.get("Metadata-Flavor") == "Google"
                server.calls.append((path, flavored))
                status, body, kind = server.answer(path, flavored)
                data = body.encode()
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, path: str, flavored: bool) -> tuple[int, str, str]:
        if not flavored:
            return 403, "Missing Metadata-Flavor:Google header.", "text/plain"
        if path in ("", "/"):
            return 200, "computeMetadata/", "text/plain"
        if path == self.TOKEN_PATH:
            token = f"ya29.metadata-{uuid.uuid4().hex}"
            self.tokens.append(token)
            body = {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
            return 200, json.dumps(body), "application/json"
        if path == "/computeMetadata/v1/instance/service-accounts/default/":
            body = {"email": self.email, "aliases": ["default"],
                    "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}  # fmt: skip
            return 200, json.dumps(body), "application/json"
        if path == "/computeMetadata/v1/project/project-id":
            return 200, self.project_id, "text/plain"
        return 404, "not found", "text/plain"

    @property
    def environment(self) -> dict[str, str]:
        return {"GCE_METADATA_HOST": self.host, "GCE_METADATA_IP": self.host}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
