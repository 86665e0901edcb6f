"""A TCP fault proxy in front of a real server, for tests of hangs and broken connections.

Modes, per proxy: ``pass`` (a plain relay), ``blackhole`` (accepts connections, never sends a
byte back and never forwards), ``trickle`` (forwards client→server, but relays the server's
answer one byte every ``interval`` seconds), ``reset`` (relays, then resets both sides once
``after_bytes`` bytes went client→server). The mode can be changed while connections run.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import attrs


@attrs.define
class FaultProxy:
    target_port: int
    target_host: str = "127.0.0.1"
    mode: str = "pass"
    after_bytes: int = 0
    interval: float = 5.0
    port: int = 0
    connections: int = 0
    _listener: socket.socket | None = None
    _stop: threading.Event = attrs.Factory(threading.Event)
    _sockets: list[socket.socket] = attrs.Factory(list)
    _accepted: threading.Condition = attrs.Factory(threading.Condition)

    def start(self) -> FaultProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="faultproxy").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for sock in [self._listener, *self._sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_connection(self, after: int, timeout: float = 10.0) -> bool:
        """Whether a connection beyond the first ``after`` arrived within ``timeout``."""
        with self._accepted:
            return self._accepted.wait_for(lambda: self.connections > after, timeout)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._accepted:
                self.connections += 1
                self._accepted.notify_all()
            self._sockets.append(client)
            if self.mode == "blackhole":
                continue  # held open, never answered
            try:
                server = socket.create_connection((self.target_host, self.target_port))
            except OSError:
                _reset(client)
                continue
            self._sockets.append(server)
            sent = [0]
            threading.Thread(target=self._up, args=(client, server, sent), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, sent: list[int]) -> None:
        try:
            while data := client.recv(65536):
                if self.mode == "blackhole":
                    continue
                if self.mode == "reset" and sent[0] + len(data) >= self.after_bytes:
                    _reset(client)
                    _reset(server)
                    return
                server.sendall(data)
                sent[0] += len(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                if self.mode == "trickle":
                    for i in range(len(data)):
                        if self._stop.wait(self.interval):
                            return
                        client.sendall(data[i : i + 1])
                elif self.mode == "blackhole":
                    continue
                else:
                    client.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would.

    ``shutdown`` first: a relay thread blocked reading this socket would otherwise keep the
    descriptor alive, and the RST would never leave.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def fault_proxy(target_port: int, mode: str = "pass", **kwargs: object) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_port, mode=mode, **kwargs)  # type: ignore[arg-type]
    with proxy:
        yield proxy


def shutdown_outcome(
    proxy: FaultProxy, stop: threading.Event, transfer: Callable[[], object], what: str
) -> tuple[BaseException, float]:
    """Run ``transfer`` on a thread until it connects through ``proxy`` (a black hole), then
    set ``stop`` (shutdown): what it raised, and how long after ``stop`` it gave up."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            transfer()
        except BaseException as exc:
            outcome.append(exc)

    before = proxy.connections
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert proxy.wait_for_connection(before), f"the {what} never connected"
    stop.set()
    stopped = time.monotonic()
    worker.join(10)
    elapsed = time.monotonic() - stopped
    assert outcome, f"the {what} was still running 10 s after shutdown"
    return outcome[0], elapsed
