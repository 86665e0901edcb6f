"""HTTP connections a stall guard can cut from another thread.

Timeouts bound a single socket operation; a server that trickles one byte every few seconds
never trips one, and a thread blocked in ``recv`` cannot be told to stop. So every request
made while a ``tracking()`` block is active (in that thread) records the urllib3 connection
it uses, and ``Connections.abort()`` shuts their sockets down: the blocked ``send``/``recv``
returns at once, requests raises, and the caller reports the guard's reason instead.

The session is shared by the SDK client (``_http``) and the plugin's own streamed requests,
so bucket checks, small uploads, listings and token refreshes are cut the same way.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class Connections:
    """The connections one watched operation used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []

    def add(self, connection: Any) -> None:
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)

    def abort(self) -> None:
        """Shut every socket down; called by the stall guard's timer thread."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            sock = getattr(connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Current(threading.local):
    connections: Connections | None = None


_current = _Current()


class tracking:  # lower case: callers use it as the function it replaced
    """Record the connections this thread's requests use until the block ends.

    A class rather than a ``contextlib.contextmanager`` generator: it is entered once per
    request, thousands of times in a restore of small files.
    """

    __slots__ = ("_connections", "_previous")

    def __init__(self, connections: Connections | None = None) -> None:
        self._connections = connections if connections is not None else Connections()
        self._previous: Connections | None = None

    def __enter__(self) -> Connections:
        self._previous = _current.connections
        _current.connections = self._connections
        return self._connections

    def __exit__(self, *exc: object) -> None:
        _current.connections = self._previous


class _Recorded:
    """Mixin: a connection tells the active ``tracking()`` block that it is in use."""

    def _remember(self) -> None:
        if _current.connections is not None:
            _current.connections.add(self)

    def connect(self) -> None:
        self._remember()
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._remember()
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Recorded, HTTPConnection):
    pass


class _HTTPSConnection(_Recorded, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class AbortableAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with connections that ``tracking()`` records (proxies included)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS managers bring their own classes
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def mount(session: requests.Session, pool_size: int) -> AbortableAdapter:
    """Give ``session`` abortable connections, ``pool_size`` per host (one per worker)."""
    adapter = AbortableAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return adapter
