"""The open connections of one botocore client, so that another thread can break them.

A transfer blocked in a socket read (a black-holed endpoint, one trickling a byte every few
seconds) only returns when the read times out, and botocore then retries it. The stall rule
and shutdown need it to return now: ``break_all`` shuts every connection of the client down
(``shutdown(2)``, which wakes a thread blocked in ``recv``), after which the destination fails
each further request before it is sent (see ``S3Destination``).

botocore offers no public hook to its sockets, so this swaps the connection classes of the
client's own urllib3 pools (``http_session._pool_classes_by_scheme``, private) for subclasses
that remember each connection. If botocore changes that layout, ``track`` reports False and
the destination falls back to its read timeout; the stall tests then fail, loudly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from typing import Any


class Sockets:
    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def track(self, client: Any) -> bool:
        """Make ``client``'s new connections known here; False if botocore's layout changed."""
        try:
            pools: dict[str, Any] = client._endpoint.http_session._pool_classes_by_scheme
            classes = {scheme: (pool, pool.ConnectionCls) for scheme, pool in pools.items()}
        except AttributeError:
            return False
        for scheme, (pool, connection) in classes.items():
            tracked = type(
                f"Tracked{connection.__name__}",
                (connection,),
                {"connect": self._connect(connection)},
            )
            pools[scheme] = type(f"Tracked{pool.__name__}", (pool,), {"ConnectionCls": tracked})
        return True

    def _connect(self, base: Any) -> Any:
        registry = self

        def connect(connection: Any) -> None:
            base.connect(connection)
            with registry._lock:
                registry._connections.add(connection)

        return connect

    def break_all(self) -> None:
        """Shut down every connection's socket (safe from any thread; fds stay owned)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            sock = getattr(connection, "sock", None)
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    # The plain socket's shutdown, also for an SSLSocket (whose own drops
                    # its TLS state under the thread reading it).
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
