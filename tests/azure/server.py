"""Azurite, Microsoft's Azure Storage emulator, started as a subprocess for tests and benchmarks.

Self-contained on purpose (no pytest, nothing from the rest of ``tests``): the benchmark harness
imports it too. Usage::

    with azurite(folder) as server:
        server.account_url        # http://127.0.0.1:<port>/devstoreaccount1
        server.account_key        # the emulator's well-known key for devstoreaccount1

The emulator comes from npm (``azurite``, pinned in the repository's ``package.json``); the
binary is looked up in the repository's ``node_modules/.bin`` first, then on ``PATH``.
Readiness is Azurite's own "listening" line on its stdout, not a poll or a sleep.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import stop

#: Azurite's built-in account and its published key (documented by Microsoft, not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
READY_MARK = "successfully listen"  # "... successfully listens on http://..."
START_TIMEOUT = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]


class AzuriteUnavailable(RuntimeError):
    """Azurite is not installed or did not start; the message says why."""


@dataclass(frozen=True)
class AzuriteServer:
    """A running Azurite blob service."""

    host: str
    port: int
    location: Path
    pid: int
    account_name: str = ACCOUNT_NAME
    account_key: str = field(default=ACCOUNT_KEY, repr=False)  # public, but long

    @property
    def account_url(self) -> str:
        """The account URL (path-style: the emulator takes the account from the first segment)."""
        return f"http://{self.host}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};AccountKey={self.account_key};"
            f"BlobEndpoint={self.account_url};"
        )

    def container_sas_url(self, container: str, hours: float = 24.0) -> str:
        """A read/write/list/delete SAS URL for ``container`` (rclone needs it on a custom port)."""
        import datetime

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        token = generate_container_sas(
            self.account_name,
            container,
            account_key=self.account_key,
            permission=ContainerSasPermissions(
                read=True, write=True, delete=True, list=True, add=True, create=True
            ),
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours),
        )
        return f"{self.account_url}/{container}?{token}"


def azurite_binary() -> str:
    """Path of ``azurite-blob``, or AzuriteUnavailable saying how to install it."""
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise AzuriteUnavailable(
        "azurite-blob not found in node_modules/.bin or on PATH (run .ci/install-test-deps)"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _OutputWatcher(threading.Thread):
    """Drains the emulator's stdout (so it never blocks), keeps the tail, signals readiness."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(name="azurite-output", daemon=True)
        self.process = process
        self.ready = threading.Event()
        self.settled = threading.Event()  # ready, or the output ended (the process died)
        self.tail: collections.deque[str] = collections.deque(maxlen=20)

    def run(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.tail.append(line.rstrip())
                if READY_MARK in line:
                    self.ready.set()
                    self.settled.set()
        finally:
            self.settled.set()

    def wait_ready(self, timeout: float) -> bool:
        """True once the ready line was seen; False if the output ended or time ran out."""
        self.settled.wait(timeout)
        return self.ready.is_set()


@contextmanager
def azurite(
    location: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[AzuriteServer]:
    """Run ``azurite-blob`` storing its data under ``location``; stop it on exit."""
    location = Path(location)
    location.mkdir(parents=True, exist_ok=True)
    port = port or _free_port(host)
    command = [
        azurite_binary(),
        "--blobHost", host,
        "--blobPort", str(port),
        "--location", str(location),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        *extra_args,
    ]  # fmt: skip
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        raise AzuriteUnavailable(f"cannot start azurite-blob: {exc}") from None
    watcher = _OutputWatcher(process)
    watcher.start()
    try:
        if not watcher.wait_ready(START_TIMEOUT):
            tail = " | ".join(watcher.tail) or "no output"
            state = (
                f"exited with status {process.poll()}"
                if process.poll() is not None
                else f"not ready after {START_TIMEOUT:.0f} s"
            )
            raise AzuriteUnavailable(f"azurite-blob on port {port} {state}: {tail}")
        yield AzuriteServer(host=host, port=port, location=location, pid=process.pid)
    finally:
        stop(process)
        watcher.join(5)
