"""A channel's receive buffer that keeps the bytes of each SSH packet as paramiko hands them.

Why: paramiko's ``BufferedPipe`` appends every packet's data to one ``array`` (a copy on the
transport thread) and hands a read out as ``array[:n].tobytes()`` (two more copies, into
fresh allocations of up to a whole 4 MiB window, each a round of page faults). Reading
1 GiB that way cost the reading thread about a third of its CPU in ``memmove`` and page
faults (perf). ``PacketPipe`` keeps the ``bytes`` objects paramiko made for each packet
and, when the SFTP reader asks (``pieces``), hands them over as they are (``Pieces``): the
reader's own join into what it returns is then the one copy on this side.

Anything else that reads the channel (paramiko's own ``SFTPClient`` calls) gets ``bytes``, as
from ``BufferedPipe``: the same ``read(nbytes, timeout)`` contract (at least one byte, or
``b""`` once closed and empty; ``PipeTimeout`` when nothing came in time), the same
``feed``, ``read_ready``, ``set_event``, ``empty``, ``close`` and ``len``: the methods
``Channel`` calls on its ``in_buffer``. ``_sftp.use_packet_pipe`` puts one in place.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from paramiko.buffered_pipe import PipeTimeout


class Pieces:
    """Channel data as a list of the pieces it arrived in; ``len`` is the bytes they hold
    (what ``Channel.recv`` counts for the receive window)."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes | memoryview], size: int) -> None:
        self.parts = parts
        self.size = size

    def __len__(self) -> int:
        return self.size


class PacketPipe:
    """``BufferedPipe``'s interface over a queue of the pieces fed to it, uncopied."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._parts: deque[bytes | memoryview] = deque()
        self._size = 0
        self._closed = False
        self._event: Any = None
        #: Set by the channel's one reader around its ``Channel.recv``: hand ``Pieces`` out,
        #: once at least ``need`` bytes are in (or the time is up, or the channel closed).
        self.pieces = False
        self.need = 1
        #: What a waiting reader waits for: ``feed`` wakes it only once that much is in, not
        #: for every packet (a reader of 255 KiB answers would wake eight times per answer).
        self._waiting_for = 0

    def __len__(self) -> int:
        return self._size

    def feed(self, data: bytes | memoryview) -> None:
        """Called by paramiko's transport thread with one packet's data."""
        with self._lock:
            if self._event is not None:
                self._event.set()
            if len(data):
                self._parts.append(data)
                self._size += len(data)
            if self._size >= self._waiting_for:
                self._changed.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def set_event(self, event: Any) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def read(self, nbytes: int, timeout: float | None = None) -> bytes | Pieces:
        """At least one byte and at most ``nbytes``, waiting up to ``timeout`` for the first
        (and, for ``pieces``, up to then for ``need`` bytes); ``b""`` once closed and empty."""
        want = min(nbytes, max(1, self.need)) if self.pieces else 1
        with self._lock:
            if self._size < want and not self._closed:
                if timeout == 0.0 and not self._size:
                    raise PipeTimeout()
                deadline = None if timeout is None else time.monotonic() + timeout
                self._waiting_for = want
                try:
                    while self._size < want and not self._closed:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            if self._size:
                                break
                            raise PipeTimeout()
                        self._changed.wait(left)
                finally:
                    self._waiting_for = 0
            if not self._size:
                return b""
            parts, size = self._take(nbytes)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
        if self.pieces:
            return Pieces(parts, size)
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def _take(self, nbytes: int) -> tuple[list[bytes | memoryview], int]:
        """Under the lock: up to ``nbytes`` from the front, a piece cut (as a view) if needed."""
        parts: list[bytes | memoryview] = []
        size = 0
        queue = self._parts
        while queue and size < nbytes:
            part = queue[0]
            room = nbytes - size
            if len(part) > room:
                view = memoryview(part)
                parts.append(view[:room])
                queue[0] = view[room:]
                size += room
                break
            parts.append(queue.popleft())
            size += len(part)
        self._size -= size
        return parts, size

    def empty(self) -> bytes:
        with self._lock:
            data = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return data

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._changed.notify_all()
            if self._event is not None:
                self._event.set()
