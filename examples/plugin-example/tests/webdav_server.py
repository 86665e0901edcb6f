"""A real WebDAV server for the tests: ``rclone serve webdav`` on a free loopback port.

A plain context manager (no pytest in here) that serves a folder with basic auth, waits
until the server accepts connections and stops it afterwards. rclone is a Debian/Ubuntu
package (``apt-get install rclone``); its WebDAV server is Go's ``x/net/webdav``, which
handles every awkward name the conformance suite throws at it, in PUT and in MOVE alike.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs


class ServerUnavailable(Exception):
    """The server could not be started (binary missing, died at start-up, never listened)."""


@attrs.frozen
class WebDAVServer:
    url: str  # http://127.0.0.1:PORT
    root: Path  # the folder it serves: what is stored, as files
    username: str
    password: str = attrs.field(repr=False)

    def config(self, path: str) -> dict[str, str]:
        """A ``config:`` mapping for the collection ``path`` (no leading slash)."""
        return {"url": f"{self.url}/{path}", "username": self.username, "password": self.password}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_listening(port: int, process: subprocess.Popen, timeout: float) -> None:
    """Poll the port: a server has no other way to say that it is listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(f"rclone exited with status {process.returncode} at start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailable(f"rclone did not listen on 127.0.0.1:{port} within {timeout:g}s")


@contextmanager
def webdav_server(
    root: Path | None = None, extra_args: Sequence[str] = (), timeout: float = 30.0
) -> Iterator[WebDAVServer]:
    """Serve ``root`` (default: a temporary folder); ``extra_args`` go to ``rclone serve
    webdav`` (``--cert``/``--key`` switch it to HTTPS)."""
    rclone = shutil.which("rclone")
    if rclone is None:
        raise ServerUnavailable("rclone is not installed (apt-get install rclone)")
    with tempfile.TemporaryDirectory(prefix="webdav-test-") as scratch:
        served = root or Path(scratch) / "root"
        served.mkdir(parents=True, exist_ok=True)
        port = free_port()
        server = WebDAVServer(
            url=f"{'https' if '--cert' in extra_args else 'http'}://127.0.0.1:{port}",
            root=served,
            username="backup-user",
            password=secrets.token_urlsafe(18),
        )
        env = {
            **os.environ,
            # The credentials go by environment, not argv, so `ps` does not show them.
            "RCLONE_USER": server.username,
            "RCLONE_PASS": server.password,
            "RCLONE_CONFIG": str(Path(scratch) / "rclone.conf"),  # none: no user config read
        }
        log = open(Path(scratch) / "rclone.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            [
                rclone,
                "serve",
                "webdav",
                str(served),
                "--addr",
                f"127.0.0.1:{port}",
                *extra_args,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                _wait_until_listening(port, process, timeout)
            except ServerUnavailable as exc:
                log.flush()
                tail = (Path(scratch) / "rclone.log").read_text(errors="replace")[-500:]
                raise ServerUnavailable(f"{exc}; log: {tail.strip()}") from None
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
