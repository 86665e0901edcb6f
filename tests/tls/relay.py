"""A TLS-terminating relay in front of a plain-HTTP test server, and the certificates for it.

The emulators (moto, Azurite, gcp-storage-emulator, the token endpoint) speak plain HTTP or
bring their own TLS set-up; putting this relay in front of any of them gives one HTTPS
endpoint whose certificate is signed by a throwaway private CA, so a test can decide which
CA bundle the client trusts. Every connection's TLS handshake either succeeds (then bytes are
relayed both ways in one thread per connection: an ``SSLSocket`` is not used from two
threads at once) or is counted in ``refused`` (the client rejected the certificate).

``https_locations``: gcp-storage-emulator builds a resumable session's ``Location`` from the
Host header with a hard-coded ``http://``; real GCS answers ``https://``. The relay rewrites
that header's scheme so the session's upload comes back through it, as it would on GCS.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from pathlib import Path

import attrs

from tests.s3.server import make_tls_files


@attrs.frozen
class PrivateCA:
    """A CA nobody trusts by default, and a server certificate it signed for 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, folder: Path) -> PrivateCA:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(*make_tls_files(folder))


@attrs.define
class TlsRelay:
    target_port: int
    ca: PrivateCA
    https_locations: bool = False
    port: int = 0
    accepted: int = 0
    refused: int = 0
    _listener: socket.socket | None = None
    _context: ssl.SSLContext | None = None
    _stop: threading.Event = attrs.Factory(threading.Event)
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    _sockets: list[socket.socket] = attrs.Factory(list)

    def url(self, path: str = "") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> TlsRelay:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.ca.cert_file, self.ca.key_file)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="tls-relay").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for sock in sockets:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept/recv
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(30)
        assert self._context is not None
        try:
            tls = self._context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.refused += 1
            client.close()
            return
        with self._lock:
            self.accepted += 1
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        except OSError:
            tls.close()
            return
        with self._lock:
            self._sockets += [tls, server]
        try:
            _pump(tls, server, self.https_locations)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for sock in (tls, server):
                with contextlib.suppress(OSError):
                    sock.close()


def _pump(tls: ssl.SSLSocket, server: socket.socket, https_locations: bool) -> None:
    """Relay both ways until either side closes (decrypted bytes may wait in ``pending``)."""
    while True:
        if tls.pending():
            readable = [tls]
        else:
            readable, _, _ = select.select([tls, server], [], [], 60)
            if not readable:
                return
        if tls in readable:
            data = tls.recv(65536)
            if not data:
                return
            server.sendall(data)
        if server in readable:
            data = server.recv(65536)
            if not data:
                return
            if https_locations:  # a header line: the body's length does not change
                data = data.replace(b"\r\nLocation: http://", b"\r\nLocation: https://")
            tls.sendall(data)
