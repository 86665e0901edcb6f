"""Reading ahead: the small files of a folder that is read in order, fetched many per exchange.

Why: a restore (or a verify) calls ``open_read`` once per file from ``file_concurrency``
threads, and each small file read the ordinary way (``_sftp.ReadStream``) costs two round
trips (open + stat; read + probe + close), each waking the reading thread and paramiko's
transport thread. Those wake-ups, not the bytes, were most of a restore's client CPU:
measured in-process on loopback (OpenSSH 9.2, 2 shared cores), 5,000 files of 16 KiB read
through ``open_read`` on 8 threads took 2.4-2.5 s of client CPU (4.2 s on one thread), the
same files fetched 64 per exchange pair 0.5 s.

When: only for files a ``list`` of their folder has shown (it tells names and sizes), from
the second ``open_read`` in that folder on (from the first, while a reader is taking files
from batches: it goes on into the next folder): a reader going through a folder, as restore
and verify do (both read a run's files sorted by path, the listing's order). Reading one
manifest per run folder (``list``, ``status``) never reads ahead. The asking thread then
fetches its file and the next listed small ones (up to ``BATCH_FILES`` and ``BATCH_BYTES``)
in one batch (``_sftp.read_small_many``); a thread asking for a file of a batch in flight
waits for that batch; a thread taking a file from memory when fewer than half a batch remain
planned ahead fetches the next batch first, so the other readers do not run dry.

What it never does: hand out bytes unless the server sent exactly the listed size and
confirmed the end of the file there (a file that grew, shrank or answered short is read the
ordinary way, which decides what it holds); keep more than ``CACHE_BYTES`` planned or held;
hand out bytes fetched more than ``MAX_AGE`` seconds ago, or a folder's bytes after this
destination wrote, renamed or deleted anything in it (``forget``). A batch that fails (a
dropped link, a stall) hands nothing out: each of its files is then read the ordinary way,
which reports the failure as usual.
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence

import attrs

from service_backup.layout import MiB

#: Files up to one OpenSSH read request are read ahead; bigger ones always stream.
SMALL_FILE = 255 * 1024
#: At most this many files and bytes per batch (the bytes fit well within a channel's receive
#: window, ``_session.WINDOW_SIZE``).
BATCH_FILES = 64
BATCH_BYTES = 2 * MiB
#: At most this much planned or held in memory for the whole destination.
CACHE_BYTES = 16 * MiB
#: Bytes fetched longer ago than this are not handed out (read again the ordinary way).
MAX_AGE = 10.0
#: Listed names remembered at most (about 70 bytes each). ``list`` walks a destination newest
#: run first, so when a long history fills this, the folders left out are the oldest runs'.
REMEMBER = 200_000
#: A listed folder no reader has used for this long is forgotten (a daemon lists every run).
REMEMBER_SECONDS = 300.0
#: For this long after a file was handed out from a batch, a reader is going through the
#: listed files in order: the first read in another listed folder starts a batch at once.
IN_ORDER_SECONDS = 2.0

#: Reads ``keys`` expecting ``sizes``: each file's bytes, or None to read it the ordinary way.
Fetch = Callable[[list[str], list[int]], Sequence[bytes | None]]


@attrs.define(eq=False)
class _Batch:
    """One fetch: ``done`` is set once its files' outcomes are in."""

    started: float
    done: threading.Event = attrs.field(factory=threading.Event)


@attrs.define(eq=False)
class _Entry:
    batch: _Batch
    size: int
    data: bytes | None = None


@attrs.define(eq=False)
class _Folder:
    """A listed folder: its regular files in name order, and how far batches are planned."""

    names: list[str]
    sizes: array[int]
    used: float
    asked: int = 0
    #: Files below this index were planned into a batch (or passed over).
    frontier: int = 0


class ReadAhead:
    """Small files of listed folders, fetched in batches ahead of the readers that ask."""

    def __init__(self, fetch: Fetch, wait: float) -> None:
        self._fetch = fetch
        self._wait = wait
        self._lock = threading.Lock()
        self._folders: dict[str, _Folder] = {}
        self._remembered = 0
        self._entries: dict[str, _Entry] = {}
        self._bytes = 0
        #: Until when a reader counts as going through listed folders in order.
        self._in_order_until = 0.0

    def remember(self, folder: str, files: Iterable[tuple[str, int]]) -> None:
        """What ``list`` found in ``folder`` (a key prefix, "" for the base): (name, size)."""
        listed = sorted(files)
        now = time.monotonic()
        with self._lock:
            for old in [f for f, r in self._folders.items() if now - r.used > REMEMBER_SECONDS]:
                self._remembered -= len(self._folders.pop(old).names)
            replaced = self._folders.pop(folder, None)
            self._remembered -= len(replaced.names) if replaced is not None else 0
            if self._remembered + len(listed) > REMEMBER:
                return
            names = [name for name, _ in listed]
            self._folders[folder] = _Folder(names, array("q", [size for _, size in listed]), now)
            self._remembered += len(names)

    def forget(self, folder: str) -> None:
        """This destination changed something in ``folder``: nothing of it is handed out."""
        with self._lock:
            record = self._folders.pop(folder, None)
            if record is not None:
                self._remembered -= len(record.names)
            lead = f"{folder}/" if folder else ""
            for key in [
                k for k in self._entries if k.startswith(lead) and "/" not in k[len(lead) :]
            ]:
                self._bytes -= self._entries.pop(key).size

    def clear(self) -> None:
        """Everything forgotten (the destination is closing)."""
        with self._lock:
            self._folders.clear()
            self._entries.clear()
            self._remembered = self._bytes = 0

    def take(self, key: str) -> bytes | None:
        """The bytes of ``key`` from a batch, or None: read it the ordinary way."""
        folder, _, name = key.rpartition("/")
        plan: list[tuple[str, _Entry]] = []
        with self._lock:
            record = self._folders.get(folder)
            if record is None:
                return None
            index = bisect.bisect_left(record.names, name)
            if index == len(record.names) or record.names[index] != name:
                return None
            record.asked += 1
            now = record.used = time.monotonic()
            own = self._pop(key)
            if own is not None:
                self._in_order_until = now + IN_ORDER_SECONDS
                if record.frontier - index <= BATCH_FILES // 2:
                    plan = self._plan(folder, record, record.frontier)
            elif (
                (record.asked >= 2 or now < self._in_order_until)
                and index >= record.frontier
                and record.sizes[index] <= SMALL_FILE
            ):
                plan = self._plan(folder, record, index)
                own = self._pop(key)
        if plan:
            self._run(plan)
        if own is None or not own.batch.done.wait(self._wait):
            return None
        if time.monotonic() - own.batch.started > MAX_AGE:
            return None
        return own.data

    def _pop(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
        return entry

    def _plan(self, folder: str, record: _Folder, start: int) -> list[tuple[str, _Entry]]:
        """Under the lock: the next batch of ``folder`` from ``start``, entered as in flight."""
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if now - e.batch.started > MAX_AGE]:
            self._pop(key)
        batch = _Batch(now)
        plan: list[tuple[str, _Entry]] = []
        planned = 0
        lead = f"{folder}/" if folder else ""
        index = start
        while index < len(record.names) and len(plan) < BATCH_FILES:
            size = record.sizes[index]
            if (
                size > SMALL_FILE
                or planned + size > BATCH_BYTES
                or self._bytes + planned + size > CACHE_BYTES
            ):
                break
            key = lead + record.names[index]
            if key not in self._entries:
                plan.append((key, _Entry(batch, size)))
                planned += size
            index += 1
        record.frontier = max(record.frontier, index)
        for key, entry in plan:
            self._entries[key] = entry
        self._bytes += planned
        return plan

    def _run(self, plan: list[tuple[str, _Entry]]) -> None:
        """Fetch a planned batch; whatever goes wrong, its files are read the ordinary way."""
        try:
            found = self._fetch([key for key, _ in plan], [entry.size for _, entry in plan])
            for (_, entry), data in zip(plan, found, strict=True):
                entry.data = data
        except Exception:  # noqa: S110 - each file's ordinary read reports it
            pass
        finally:
            plan[0][1].batch.done.set()
