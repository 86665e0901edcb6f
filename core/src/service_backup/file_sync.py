"""``syncfs(2)`` and ``sync_file_range(2)``, which the ``os`` module lacks, through libc.

One place loads the C library for the callers that flush what they wrote: the kernel copy and
``restore`` (``sync_file_range``: start a big file's write-back as it is written), the local
destination and ``restore`` (``syncfs``: one flush of a whole file system, like ``sync -f``,
instead of an fsync per file; ``FolderFlush`` starts it early on a thread).
``ctypes`` is imported on first use, so a run that flushes nothing this way does not pay for it,
and libc is found through the symbols already in this process (``CDLL(None)``):
``ctypes.util.find_library("c")`` would run ``/sbin/ldconfig -p``, a fork and an exec.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

_LIBC: Any = None
_SYNC_FILE_RANGE: Any = None
_LOOKED_UP = False
#: ``SYNC_FILE_RANGE_WRITE`` from ``<fcntl.h>``: start write-out, do not wait for it.
SYNC_FILE_RANGE_WRITE = 2
#: Bytes written between two early write-backs (``FolderFlush.wrote``): the final ``syncfs``
#: then finds at most about this much still dirty instead of everything written.
WRITEBACK_EVERY = 16 * 1024 * 1024


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


class FolderFlush:
    """Makes what was written under ``folder`` durable with one final ``syncfs``, started early.

    ``syncfs`` reports a write-back error (``EIO``, ``ENOSPC``) to a descriptor only once, so
    every call goes through one descriptor of ``folder``, opened here, before the first byte
    is written. ``wrote(n)`` counts bytes written whose write-back nobody started
    (``start_writeback`` starts a big file's); every ``every`` of them a ``syncfs`` runs on a
    thread while writing goes on, one at a time, as the kernel's flusher would for ``cp``: the
    final one (``finish``) then waits for little. Nothing is durable through the early ones;
    an error one of them reports is kept and raised by ``finish``. Where libc has no
    ``syncfs`` (or the kernel answers ``ENOSYS``) ``finish`` flushes the whole machine
    (``sync``), which reports nothing, and nothing runs early.
    """

    def __init__(self, folder: str | os.PathLike[str], every: int | None = None) -> None:
        self.folder = folder
        self.every = every or WRITEBACK_EVERY
        self._fd: int | None = None
        if has_syncfs():
            self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._unflushed = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def wrote(self, n: int) -> None:
        """``n`` more bytes written (any thread; unlocked: a lost update only delays a flush)."""
        self._unflushed += n
        if self._unflushed >= self.every and self._fd is not None:
            self._unflushed = 0
            with self._lock:  # started under it: ``_wait`` never sees an unstarted thread
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._early, name="writeback", daemon=True
                    )
                    self._thread.start()

    def _early(self) -> None:
        try:
            assert self._fd is not None
            syncfs(self._fd, self.folder)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # the final flush finds out again and falls back
                self._error = self._error or exc
        finally:
            with self._lock:
                self._thread = None

    def settle(self) -> None:
        """Wait for an early write-back; raise the error it met (once), if it met one.

        For a caller that flushes only when something was written since its last flush (the
        local destination, twice a run): an early error must fail that flush even so.
        """
        self._wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def finish(self) -> None:
        """Everything written so far on disk, or ``OSError`` saying why not."""
        self.settle()
        if self._fd is None:
            os.sync()
            return
        try:
            syncfs(self._fd, self.folder)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # a kernel without the call
                raise
            os.sync()

    def _wait(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()

    def close(self) -> None:
        self._wait()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
