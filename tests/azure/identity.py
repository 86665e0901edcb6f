"""What the DefaultAzureCredential tests need on loopback: a TLS certificate and a token endpoint.

Azurite checks bearer tokens only in its OAuth mode (``--oauth basic``), and only over HTTPS,
so it is started with a self-signed certificate made here (the client trusts it through
``REQUESTS_CA_BUNDLE``). In basic mode Azurite decodes the JWT and checks its lifetime, issuer
(``https://sts.windows.net/...``) and audience (``https://storage.azure.com``), not its
signature. ``ManagedIdentityEndpoint`` plays the App Service managed-identity endpoint
(``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``) that azure-identity's ManagedIdentityCredential
asks for such a token; it records every request.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
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
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def storage_token(lifetime: int = 3600) -> tuple[str, int]:
    """An (unsigned) Azure AD access token for Azure Storage, and its expiry."""
    now = int(time.time())
    claims = {
        "aud": "https://storage.azure.com",
        "iss": f"https://sts.windows.net/{TENANT}/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime,
        "tid": TENANT,
        "oid": "11059fcc-5514-4800-b5f8-49808b9cfab6",
    }
    header = {"alg": "RS256", "typ": "JWT"}
    return f"{_b64(header)}.{_b64(claims)}.c2lnbmF0dXJl", claims["exp"]


class ManagedIdentityEndpoint:
    """An App Service-style managed-identity token endpoint on loopback."""

    def __init__(self, header_secret: str) -> None:
        self.header_secret = header_secret
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                endpoint.requests.append(
                    {"query": query, "header": self.headers.get("X-IDENTITY-HEADER")}
                )
                if self.headers.get("X-IDENTITY-HEADER") != endpoint.header_secret:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                token, expires = storage_token()
                body = json.dumps(
                    {
                        "access_token": token,
                        "expires_on": str(expires),
                        "resource": query.get("resource", [""])[0],
                        "token_type": "Bearer",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"

    @contextmanager
    def running(self) -> Iterator[ManagedIdentityEndpoint]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
