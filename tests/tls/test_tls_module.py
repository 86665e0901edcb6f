"""``service_backup.tls``: which CA file clients are given, and how a refused certificate is told.

Also checks the urllib-based plugins (healthchecks pings, the CF alerter), which build their
context with ``ssl.create_default_context()``: that reads the same OS store (``SSL_CERT_FILE``),
so they need no change; these tests would catch one that started using another bundle.
"""

from __future__ import annotations

import socket
import ssl
import threading
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from service_backup import tls
from service_backup_plugins import healthchecks
from tests.tls.relay import PrivateCA, TlsRelay


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def https_server(private_ca: PrivateCA) -> Iterator[TlsRelay]:
    """A plain HTTP server answering 200 to anything, behind the private-CA TLS relay."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with TlsRelay(server.server_address[1], private_ca) as relay:
            yield relay
    finally:
        server.shutdown()
        server.server_close()


def test_ssl_cert_file_is_the_bundle(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    clean_env.setenv("SSL_CERT_FILE", str(bundle))
    assert tls.system_ca_bundle() == str(bundle), "SSL_CERT_FILE is not honoured"
    assert tls.requests_verify() == str(bundle)


def test_a_missing_ssl_cert_file_falls_back_to_the_default(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    found = tls.system_ca_bundle()
    assert found is None or Path(found).is_file(), found
    assert found != str(tmp_path / "missing.pem")


def test_distribution_locations_when_openssl_names_none(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Python built with its own OpenSSL may look elsewhere: Debian's file is still found."""
    debian = tmp_path / "ca-certificates.crt"
    debian.write_text("")
    nowhere = ssl.DefaultVerifyPaths(None, None, "SSL_CERT_FILE", "", "SSL_CERT_DIR", "")  # type: ignore[arg-type]
    clean_env.setattr(ssl, "get_default_verify_paths", lambda: nowhere)
    clean_env.setattr(tls, "CA_FILE_CANDIDATES", (str(tmp_path / "absent.crt"), str(debian)))
    assert tls.system_ca_bundle() == str(debian)
    clean_env.setattr(tls, "CA_FILE_CANDIDATES", ())
    assert tls.system_ca_bundle() is None
    assert tls.requests_verify() is True, "no store at all: the library's own bundle"


def test_requests_ca_bundle_still_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("SSL_CERT_FILE", str(tmp_path / "os.pem"))
    (tmp_path / "os.pem").write_text("")
    clean_env.setenv("REQUESTS_CA_BUNDLE", "/explicit/bundle.pem")
    assert tls.requests_verify() == "/explicit/bundle.pem"


def test_untrusted_reason_through_requests(
    clean_env: pytest.MonkeyPatch, https_server: TlsRelay, os_bundles: dict[str, Path]
) -> None:
    clean_env.setenv("SSL_CERT_FILE", str(os_bundles["without_ca"]))
    with pytest.raises(requests.exceptions.SSLError) as info:
        requests.get(https_server.url("/"), verify=tls.requests_verify(), timeout=10)
    reason = tls.untrusted_reason(info.value)
    assert reason == "unable to get local issuer certificate", reason
    message = tls.untrusted_message("https://example", reason, "checking")
    assert message.startswith("TLS certificate of https://example not trusted ("), message
    assert "trusted_certs" in message

    clean_env.setenv("SSL_CERT_FILE", str(os_bundles["with_ca"]))
    answer = requests.get(https_server.url("/"), verify=tls.requests_verify(), timeout=10)
    assert answer.status_code == 200, "the CA in the OS bundle is not trusted"


def test_untrusted_reason_is_none_for_other_failures() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(requests.ConnectionError) as info:
        requests.get(f"https://127.0.0.1:{port}/", timeout=5)  # nothing listens there
    assert tls.untrusted_reason(info.value) is None, f"{info.value} taken for a certificate"


@pytest.mark.parametrize("client", ["healthchecks", "urllib_client"])
def test_urllib_plugins_use_the_os_store(
    client: str,
    clean_env: pytest.MonkeyPatch,
    https_server: TlsRelay,
    os_bundles: dict[str, Path],
) -> None:
    def call() -> int:
        if client == "healthchecks":
            return healthchecks._send(https_server.url("/ping"), "ok", 10, False)
        context = tls.client_context()
        with urllib.request.urlopen(https_server.url("/"), context=context, timeout=10) as r:  # noqa: S310
            return int(r.status)

    clean_env.setenv("SSL_CERT_FILE", str(os_bundles["with_ca"]))
    assert call() == 200, f"{client} did not trust the CA in the OS bundle"
    clean_env.setenv("SSL_CERT_FILE", str(os_bundles["without_ca"]))
    with pytest.raises(urllib.error.URLError) as info:
        call()
    assert tls.untrusted_reason(info.value) is not None, info.value
