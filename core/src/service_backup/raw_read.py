"""``RawRead``: the shape of a plugin's ``open_read`` stream that hands out its transport's bytes.

The SDKs a destination reads through (botocore, urllib3, paramiko) deliver each piece of a body
as a ``bytes`` object already. ``io.RawIOBase`` would read it through ``readinto`` into a buffer
of its own, one more copy per read, and a ``BufferedReader`` on top one more; a plugin's stream
instead implements ``read(size)`` to return the piece itself (at most ``size`` bytes, ``b""``
at the end). What is the same for every such stream lives here once: ``readinto`` for callers
that read into a buffer of their own (one copy, theirs), ``readall``, and being readable.
"""

from __future__ import annotations

import io
from typing import Any

from .layout import MiB


class RawRead(io.RawIOBase):
    """Subclass and implement ``read``; ``size`` < 0 or None must return ``readall()``."""

    #: Bytes asked of ``read`` per call by ``readall``.
    readall_piece = MiB

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(self.readall_piece):
            chunks.append(chunk)
        return b"".join(chunks)
