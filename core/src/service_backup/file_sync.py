"""``syncfs(2)`` and ``sync_file_range(2)``, which the ``os`` module lacks, through libc.

One place loads the C library for the three callers that flush what they wrote: the kernel copy
(``sync_file_range``: start a chunk's write-back early), the local destination and ``restore``
(``syncfs``: one flush of a whole file system, like ``sync -f``, instead of an fsync per file).
``ctypes`` is imported on first use, so a run that flushes nothing this way does not pay for it,
and libc is found through the symbols already in this process (``CDLL(None)``):
``ctypes.util.find_library("c")`` would run ``/sbin/ldconfig -p``, a fork and an exec.
"""

from __future__ import annotations

import os
from typing import Any

_LIBC: Any = None
_SYNC_FILE_RANGE: Any = None
_LOOKED_UP = False
#: ``SYNC_FILE_RANGE_WRITE`` from ``<fcntl.h>``: start write-out, do not wait for it.
SYNC_FILE_RANGE_WRITE = 2


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def has_syncfs() -> bool:
    """Whether libc has ``syncfs`` (Linux)."""
    return getattr(_libc(), "syncfs", None) is not None


def syncfs(fd: int, what: str | os.PathLike[str]) -> None:
    """``syncfs(2)`` through ``fd``, open on the file system to flush (only where
    ``has_syncfs``); a failure (a write-back error since the last report) raises ``OSError``
    naming ``what``."""
    if _libc().syncfs(fd) != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(what))


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``fd``'s range to disk without waiting; a no-op where libc lacks the call.

    The return value is ignored: nothing is durable through this, and the final ``syncfs``
    reports any write-back error."""
    global _SYNC_FILE_RANGE, _LOOKED_UP
    if not _LOOKED_UP:
        import ctypes

        function = getattr(_libc(), "sync_file_range", None)
        if function is not None:
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
        _SYNC_FILE_RANGE, _LOOKED_UP = function, True
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)
