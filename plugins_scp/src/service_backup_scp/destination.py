"""The ``scp`` destination: files on an SSH server, written over SFTP with paramiko.

Only SFTP requests are sent (mkdir, open, write, fstat, close, rename, stat, readdir, remove);
no remote shell command ever runs, so no path can be interpreted by a shell and a login shell's
rc files cost nothing.

Every file is written under a temporary name, ``.service-backup-partial-<hex>`` beside its
final name, and renamed into place (``posix-rename@openssh.com``, which replaces atomically)
only after the core's ``Source`` handed out its last byte without complaint (it raises first
when the file is short, grew or changed) and the server reported the expected size. So a torn
copy never carries a final name and never replaces a good one. A failed write removes its
temporary file while the link is up; what a dropped link leaves behind is swept by a later
run's ``ensure_location`` (``_sweep``: this tool's names, older than ``ORPHAN_AGE``, in the
run folders of the last ``ORPHAN_DAYS`` days).

Each write runs under the core's stall rule (``StallGuard``): when it moves fewer than
``stall_min_bytes_per_second`` for ``stall_timeout_seconds``, or service-backup shuts down,
its connection is closed, which ends every blocked SFTP call at once, and the write fails
saying why. Files are stored with ``file_mode`` (0600), folders created with ``folder_mode``
(0700).

Three ways up, same guarantees: ``write`` streams a file with pipelined 255 KiB writes;
files of ``SPLIT_THRESHOLD`` and more go as two streams on two channels; ``write_batch``
(used by this plugin's upload hook, ``upload.py``) sends many small files in three exchanges.
The SFTP framing lives in ``_sftp.py``, connections in ``_session.py``.

Reads (``open_read``, what ``verify`` and ``restore`` use) keep up to 16 requests of 255 KiB
in flight on a channel of their own (``_sftp.ReadStream``): two exchanges for a small file,
bounded memory for any size, under a stall rule of their own ("download from ..."). The small
files of a listed folder that is being read in order come from batches of up to 64 files per
two exchanges instead (``_readahead``: a restore's per-file round trips were most of its
client CPU); only bytes of exactly the listed size with the end of the file confirmed are
handed out that way, anything else is read as above.
"""

from __future__ import annotations

# First, so that paramiko is imported without invoke (see the module).
from . import _paramiko_import  # noqa: F401

# isort: split
import builtins
import contextlib
import errno
import io
import itertools
import posixpath
import re
import stat as stat_mode
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, cast

import paramiko
from loguru import logger
from paramiko.sftp import SFTPError

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound, one_line
from service_backup.layout import KeyLayout, MiB
from service_backup.raw_read import RawRead
from service_backup.source import Source
from service_backup.stall import StallGuard, StallRule

from . import _sftp
from ._keys import KeyProblem, load_private_key
from ._readahead import ReadAhead
from ._session import (
    CONNECT_TIMEOUT,
    IDLE_TIMEOUT,
    Endpoint,
    HostKeyGuard,
    Session,
    SessionPool,
    describe_error,
    open_transport,
)
from .config import ScpConfig, parse_mode

PARTIAL_MARK = ".service-backup-partial-"
#: Exactly the temporary names this tool creates: only these are ever swept.
PARTIAL_NAME = re.compile(re.escape(PARTIAL_MARK) + "[0-9a-f]{32}")
#: A temporary file untouched this long belongs to no running upload (a live one is written
#: continuously, and a stalled one is aborted within ``stall_timeout_seconds``).
ORPHAN_AGE = 3600
#: The run folders of this many days (today included) are swept at each run's start.
ORPHAN_DAYS = 3
#: Files this big go up as two parallel streams.
SPLIT_THRESHOLD = 64 * MiB
#: Transport-level failures and protocol violations: the channel can no longer be trusted.
LINK_ERRORS = (paramiko.SSHException, EOFError, TimeoutError, ConnectionError, SFTPError)


#: Renames per pipelined exchange when promoting a staged run.
RENAME_BATCH = 512


class ScpDestination(Destination):
    """Files under ``destination`` on ``server``.

    ``file_concurrency`` is 8: every file (or batch of small files, see ``upload.py``) costs
    three round trips (open; writes + fstat + close; rename) whose latency only overlapping
    work hides. Eight SFTP channels over two connections (``_session``) keep the client and
    sshd busy on a two-core VM; more threads only contend for the GIL, and memory stays
    bounded (a stream holds at most its in-flight writes, a batch at most 1 MiB).

    Files of a megabyte or more are bound by the client's CPU, not by round trips: about
    3 ms of CPU per MiB, most of it paramiko framing, encrypting and sending one SSH packet
    per 32 KiB (the server's maximum) in Python and reading the server's window adjustments
    (one per ~96 KiB) on its transport thread; sha256 and reading the file are ~0.7 ms. 2, 3,
    4 or 8 streams, on one connection or two, measured the same CPU for 200 files of 1 MiB
    in an earlier round; measured again in-process with interleaved runs (median of 6, same
    process, streams on one connection), 4 streams at once took 0.70 s of CPU, 2 took 0.71
    and 8 took 0.77, so the ``upload`` hook streams ``stream_concurrency`` files at once, on
    channels of one connection where they fit (``SessionPool.session(together=True)``).
    """

    file_concurrency = 8
    #: Streamed files (bigger than a batch's) uploading at once: see above.
    stream_concurrency = 4
    #: ``posix-rename`` is a metadata operation: the run stages same-day re-runs and renames.
    can_rename = True
    #: Seconds for TCP connect, banner, key exchange and authentication, each.
    connect_timeout: float = CONNECT_TIMEOUT
    #: Seconds a channel waits for the server (a reply, send window) before the link is given up.
    idle_timeout: float = IDLE_TIMEOUT

    def __init__(self, config: ScpConfig, context: DestinationContext) -> None:
        self.server = config.server
        self.base = _sftp_base(config.destination)
        self.layout = KeyLayout(self.base)
        self._root = "/" if self.base.startswith("/") else ""
        self.name = context.display_name
        self._log = logger.bind(destination_name=self.name)
        self.file_mode = parse_mode(config.file_mode)
        self.folder_mode = parse_mode(config.folder_mode)
        self.stop = context.stop
        rule = StallRule(config.stall_timeout_seconds, config.stall_min_bytes_per_second)
        self._guard = StallGuard(f"upload to {config.server}:{config.port}", rule, self.stop)
        self._read_guard = StallGuard(
            f"download from {config.server}:{config.port}", rule, self.stop
        )
        #: Per guard: its running watch and how many transfers it watches.
        self._watches: dict[
            StallGuard, tuple[contextlib.AbstractContextManager[StallGuard], int]
        ] = {}
        self._watch_lock = threading.Lock()
        #: Temporary names: a random prefix per destination and a counter (``uuid4`` per file
        #: costs a system call); 32 hex digits, the shape ``PARTIAL_NAME`` sweeps.
        self._temp_prefix = uuid.uuid4().hex[:16]
        self._temp_numbers = itertools.count()
        try:
            key = load_private_key(config.key.reveal())
        except KeyProblem as exc:
            raise DestinationError(f"key for {config.user}@{config.server}: {exc}") from None
        self.endpoint = Endpoint(
            config.server,
            config.port,
            config.user,
            key,
            connect_timeout=self.connect_timeout,
            idle_timeout=self.idle_timeout,
        )
        self.where = self.endpoint.where
        guard = HostKeyGuard(config.server, config.port, config.fingerprint, self.name)
        self.pool = SessionPool(
            lambda register: open_transport(self.endpoint, guard, register),
            self.where,
            timeout=self.endpoint.idle_timeout,
        )
        #: SFTP has no client-chosen page size: OpenSSH answers each READDIR with up to 100
        #: names and ``list`` reads every directory to its end. Kept for the common interface.
        self.list_page_size = 100
        self._folders: set[str] = set()
        self._folders_lock = threading.Lock()
        #: Small files of listed folders, fetched in batches while a restore reads them.
        self._ahead = ReadAhead(self._read_small, wait=2 * self.endpoint.idle_timeout)

    # ------------------------------------------------------------------------------ paths
    def _path(self, key: str) -> str:
        return self._root + self.layout.full(key)

    def _temp(self, final: str) -> str:
        """A temporary name beside ``final``: a rename within one folder is cheap (5,000
        renames across folders took ext4 4-5 times the CPU of renames within one)."""
        name = f"{PARTIAL_MARK}{self._temp_prefix}{next(self._temp_numbers):016x}"
        return posixpath.join(posixpath.dirname(final), name)

    def _remote(self, path: str) -> str:
        return f"{self.server}:{path}"

    def describe(self, prefix: str) -> str:
        return self._remote(posixpath.join(self.base, prefix) if prefix else self.base)

    # ---------------------------------------------------------------------------- folders
    def ensure_location(self) -> None:
        """Create the base folder, then sweep what earlier failed runs left in it."""
        with self.pool.session() as session:
            self._make_folders(session, self.base)
            self._sweep(session)

    def _sweep(self, session: Session) -> None:
        """Remove this tool's temporary files older than ``ORPHAN_AGE`` from recent run folders.

        Runs write to ``[<deployment>/]YYYY/MM/DD/...``, and a temporary file sits beside its
        final name, so what a dropped link left is in a run folder. Walking the whole base
        (years of backups) every run would cost more than the upload; so the base folder,
        and the folders of the last ``ORPHAN_DAYS`` days under the base and under each of its
        direct subfolders (a deployment name), are walked. Only names that match
        ``PARTIAL_NAME`` exactly, only regular files. The age is judged by the server's clock
        against ours, so a skew of minutes is harmless. A sweep that fails is logged and
        never fails the run.
        """
        client = session.client
        cutoff = time.time() - ORPHAN_AGE
        stale: builtins.list[tuple[str, int]] = []
        today = datetime.now().astimezone().date()
        days = [(today - timedelta(days=n)).strftime("%Y/%m/%d") for n in range(ORPHAN_DAYS)]

        def listing(folder: str) -> builtins.list[paramiko.SFTPAttributes]:
            try:
                entries = client.listdir_attr(folder)
            except FileNotFoundError:
                return []
            for entry in entries:
                mode = entry.st_mode or 0
                if (
                    PARTIAL_NAME.fullmatch(entry.filename)
                    and stat_mode.S_ISREG(mode)
                    and (entry.st_mtime or 0) < cutoff
                ):
                    stale.append((posixpath.join(folder, entry.filename), entry.st_size or 0))
            return entries

        try:
            roots = [self.base] + [
                posixpath.join(self.base, e.filename)
                for e in listing(self.base)
                if stat_mode.S_ISDIR(e.st_mode or 0) and not e.filename.startswith(".")
            ]
            pending = [posixpath.join(root, day) for root in roots for day in days]
            while pending:
                folder = pending.pop()
                pending += [
                    posixpath.join(folder, e.filename)
                    for e in listing(folder)
                    if stat_mode.S_ISDIR(e.st_mode or 0)
                ]
            errors = _sftp.remove_many(client, [path for path, _ in stale])
        except LINK_ERRORS as exc:
            raise self._link_failed(session, exc) from None
        except OSError as exc:
            self._log.warning(
                f"cannot look for leftover temporary files in {self.describe('')}: "
                f"{_sftp_text(exc)}"
            )
            return
        removed = [size for (_, size), error in zip(stale, errors, strict=True) if error is None]
        if removed:
            self._log.info(
                f"removed {len(removed)} temporary file(s) ({sum(removed)} bytes) left in "
                f"{self.describe('')} by an earlier failed upload"
            )
        failed = [error for error in errors if error is not None]
        if failed:
            self._log.warning(
                f"cannot remove {len(failed)} temporary file(s) left in {self.describe('')}: "
                f"{_sftp_text(failed[0])}"
            )

    def _forget_folder(self, path: str) -> None:
        with self._folders_lock:
            self._folders.discard(path)

    def _make_folders(self, session: Session, path: str) -> None:
        """mkdir -p through SFTP: create each missing component, tolerate existing ones.

        The common case (parent exists) costs one request. A failure is looked at: an existing
        folder (made by another thread, or OpenSSH's generic "Failure" for EEXIST) is fine;
        a missing one has its parents made first, so an error names the first component that
        cannot be created.
        """
        if path in self._folders or path in ("/", ".", ""):
            return
        client = session.client
        try:
            error = _sftp.make_folder(client, path, self.folder_mode)
            if error is not None and not self._is_folder(session, path):
                # Make the parent (a no-op when known) and try again: also right when another
                # thread created the parent since the first attempt.
                self._make_folders(session, posixpath.dirname(path))
                error = _sftp.make_folder(client, path, self.folder_mode)
                if error is not None and not self._is_folder(session, path):
                    raise self._mkdir_failed(path, error)
        except LINK_ERRORS as exc:
            raise self._link_failed(session, exc) from None
        with self._folders_lock:
            self._folders.add(path)

    def _is_folder(self, session: Session, path: str) -> bool:
        """True for a folder, False when absent; a non-folder in the way is an error."""
        try:
            attrs = session.client.stat(path)
        except OSError:
            return False
        if stat_mode.S_ISDIR(attrs.st_mode or 0):
            return True
        raise DestinationError(f"{self._remote(path)} exists and is not a folder")

    def _mkdir_failed(self, path: str, exc: OSError) -> DestinationError:
        if exc.errno == errno.EACCES:
            return DestinationError(f"permission denied creating folder {self._remote(path)}")
        return DestinationError(f"cannot create folder {self._remote(path)}: {_sftp_text(exc)}")

    # ------------------------------------------------------------------------------ write
    @contextlib.contextmanager
    def _watched(self, guard: StallGuard | None = None) -> Iterator[StallGuard]:
        """A transfer under the stall rule; when it trips, every connection is closed.

        One guard watches all of this destination's transfers together (one timer thread
        while any runs, not one per file): the server is stalled when all of them together
        move less than the floor. Closing the transports is the one way to end paramiko calls
        blocked on the server's window or answer at once; the pool closes all of them, and
        every write that fails because of it, or starts later, reports the stall (or the
        shutdown) rather than a dropped link.
        """
        guard = guard or self._guard
        if guard.tripped:
            raise guard.error()
        if self.stop.is_set():
            raise DestinationError(f"{guard.what}: interrupted: service-backup is shutting down")
        if self.pool.aborted:
            raise DestinationError(self.pool.aborted)
        with self._watch_lock:
            watch, active = self._watches.get(guard, (None, 0))
            if watch is None:
                watch = guard.watch(lambda: self.pool.abort(str(guard.error())))
                watch.__enter__()
            self._watches[guard] = (watch, active + 1)
        try:
            yield guard
        except BaseException:
            if guard.tripped:
                raise guard.error() from None
            raise
        finally:
            with self._watch_lock:
                watch, active = self._watches.pop(guard)
                if active > 1:
                    self._watches[guard] = (watch, active - 1)
                else:
                    watch.__exit__(None, None, None)

    def write(self, key: str, source: Source) -> ObjectInfo:
        self._ahead.forget(_folder_of(key))
        final = self._path(key)
        temp = self._temp(final)
        with self._watched() as guard, self.pool.session(together=True) as session:
            try:
                try:
                    self._make_folders(session, posixpath.dirname(final))
                    stored = None
                    if source.size >= SPLIT_THRESHOLD:
                        stored = self._upload_split(session, source, temp, guard)
                    if stored is None:
                        stored = self._upload(session, source, temp, guard)
                    self._check_size(final, stored, source.size)
                    self._rename(session, temp, final)
                except LINK_ERRORS as exc:
                    raise self._link_failed(session, exc) from None
                except OSError as exc:
                    if not session.alive():
                        raise self._link_failed(session, exc) from None
                    raise self._failed("write", self._remote(final), exc) from None
            except BaseException:
                self._remove_quietly(session, temp)
                raise
        return ObjectInfo(key=key, size=stored)

    def _upload(self, session: Session, source: Source, temp: str, guard: StallGuard) -> int:
        """The source as one pipelined stream; the size the server reports."""
        stream = _sftp.open_for_write(session.client, temp, self.file_mode)
        try:
            chunk = _sftp.chunk_size(session.connection.transport)
            for offset in range(0, source.size, chunk):
                data = source.read_at(offset, min(chunk, source.size - offset))
                stream.send(offset, data)
                guard.progress(len(data))
            _all_read(source)
            return stream.finish(self.file_mode)
        except BaseException:
            stream.abandon()
            raise

    def _upload_split(
        self, session: Session, source: Source, temp: str, guard: StallGuard
    ) -> int | None:
        """A big file as two streams on two channels; None when no second channel is free now.

        One stream stalls whenever the server's 2 MiB channel window is used up until its
        window adjustment arrives; a second channel (another connection when one is free)
        keeps data flowing meanwhile, and the client's work is spread over two threads. Both
        take the next chunk from one reader that reads the source in order under a lock, so
        the ``Source`` hashes as it reads and nothing waits out of order in memory.
        """
        with self.pool.spare_session(together=True) as second:
            if second is None:
                return None
            first = _sftp.open_for_write(session.client, temp, self.file_mode)
            other: _sftp.Stream | None = None
            chunk = _sftp.chunk_size(session.connection.transport)
            reader = _InOrder(source, chunk, guard)
            failures: list[BaseException] = []
            try:
                other = _sftp.open_for_write(second.client, temp, None, create=False)
                helper = threading.Thread(
                    target=reader.pump, args=(other, failures), name="upload-split", daemon=True
                )
                helper.start()
                try:
                    reader.pump(first, failures)
                finally:
                    helper.join()
                if failures:
                    if isinstance(failures[0], LINK_ERRORS):
                        second.broken = True
                    raise failures[0]
                _sftp.close(second.client, other.handle)
                other.closed = True
                _all_read(source)
                return first.finish(self.file_mode)
            except BaseException:
                if other is not None:
                    other.abandon()
                first.abandon()
                raise

    def _check_size(self, final: str, stored: int, size: int) -> None:
        if stored != size:
            raise DestinationError(
                f"{self._remote(final)}: the server stored {stored} bytes of {size} sent; "
                "upload incomplete"
            )

    def _remove_quietly(self, session: Session, path: str) -> None:
        if session.broken:
            return  # swept by a later run's ensure_location
        with contextlib.suppress(OSError, *LINK_ERRORS):
            session.client.remove(path)

    def _rename(self, session: Session, temp: str, final: str) -> None:
        try:
            _sftp.rename(session.client, temp, final)
        except OSError as exc:
            if "unsupported" not in str(exc).lower():
                raise self._failed("rename into", self._remote(final), exc) from None
            self._rename_portably(session, temp, final)

    def _rename_portably(self, session: Session, temp: str, final: str) -> None:
        """Servers without posix-rename: plain SFTP rename refuses an existing target."""
        with contextlib.suppress(FileNotFoundError):
            session.client.remove(final)
        try:
            session.client.rename(temp, final)
        except OSError as exc:
            raise self._failed("rename into", self._remote(final), exc) from None

    # ------------------------------------------------------------------------- batches
    def write_batch(self, items: builtins.list[tuple[str, Source]]) -> builtins.list[ObjectInfo]:
        """Store several files in three round trips (the caller bounds their total size).

        The same guarantees as ``write``: every source is read (and checked by the core's
        ``Source``) before anything is sent, each file goes to a temporary name, its size is
        checked with fstat after the write, and only then is it renamed into place. All opens
        leave in one send, then all writes, fstats and closes, then all renames.
        """
        for folder in {_folder_of(key) for key, _ in items}:
            self._ahead.forget(folder)
        contents = [source.read_all() for _, source in items]
        for _, source in items:
            _all_read(source)
        finals = [self._path(key) for key, _ in items]
        temps = [self._temp(final) for final in finals]
        with self._watched() as guard, self.pool.session() as session:
            try:
                for folder in dict.fromkeys(posixpath.dirname(f) for f in finals):
                    self._make_folders(session, folder)
                self._batch_write(session, contents, finals, temps, guard)
                self._batch_rename(session, finals, temps)
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None
            except OSError as exc:
                if not session.alive():
                    raise self._link_failed(session, exc) from None
                raise
        return [
            ObjectInfo(key=key, size=len(data))
            for (key, _), data in zip(items, contents, strict=True)
        ]

    def _batch_write(
        self, session: Session, contents: builtins.list[bytes], finals: builtins.list[str],
        temps: builtins.list[str], guard: StallGuard,
    ) -> None:  # fmt: skip
        client = session.client
        opened = _sftp.open_many(client, temps, self.file_mode)
        failure: DestinationError | None = None
        for outcome, final in zip(opened, finals, strict=True):
            if isinstance(outcome, OSError):
                failure = failure or self._failed("write", self._remote(final), outcome)
        handles = [h for h in opened if isinstance(h, bytes)]
        if failure is not None:
            with contextlib.suppress(OSError, *LINK_ERRORS):
                _sftp.close_many(client, handles)
            self._batch_remove(session, temps)
            raise failure
        chunk = _sftp.chunk_size(session.connection.transport)
        written = _sftp.write_many(client, handles, contents, self.file_mode, chunk, guard.progress)
        for result, data, final in zip(written, contents, finals, strict=True):
            if isinstance(result, OSError):
                failure = failure or self._failed("write", self._remote(final), result)
            elif result != len(data):
                failure = failure or DestinationError(
                    f"{self._remote(final)}: the server stored {result} bytes of {len(data)} "
                    "sent; upload incomplete"
                )
        if failure is not None:
            self._batch_remove(session, temps)
            raise failure

    def _batch_rename(
        self,
        session: Session,
        finals: builtins.list[str],
        temps: builtins.list[str],
        keys: Mapping[str, str] | None = None,
    ) -> None:
        """Rename each of ``temps`` to its final path; ``keys`` (the interface's ``rename``)
        names the key of each source path, so that a missing one is ``ObjectNotFound``."""
        moves = list(zip(temps, finals, strict=True))
        failure: DestinationError | None = None
        leftovers = []
        for error, (temp, final) in zip(
            _sftp.rename_many(session.client, moves), moves, strict=True
        ):
            if error is None:
                continue
            if "unsupported" in str(error).lower():
                self._rename_portably(session, temp, final)
                continue
            key = keys.get(temp) if keys is not None else None
            failure = failure or self._failed("rename into", self._remote(final), error, key=key)
            leftovers.append(temp)
        if failure is not None:
            self._batch_remove(session, leftovers)
            raise failure

    def _batch_remove(self, session: Session, paths: builtins.list[str]) -> None:
        with contextlib.suppress(OSError, *LINK_ERRORS):
            _sftp.remove_many(session.client, paths)

    # ---------------------------------------------------------------------------- rename
    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """Pipelined ``posix-rename`` (a few hundred per exchange), then prune emptied folders."""
        if not moves:
            return
        for folder in {_folder_of(key) for move in moves for key in move}:
            self._ahead.forget(folder)
        pairs = [(self._path(old), self._path(new)) for old, new in moves]
        keys = {self._path(old): old for old, _ in moves}
        targets = list(dict.fromkeys(posixpath.dirname(new) for _, new in pairs))
        with self.pool.session() as session:
            for folder in targets:
                self._make_folders(session, folder)
            try:
                for start in range(0, len(pairs), RENAME_BATCH):
                    batch = pairs[start : start + RENAME_BATCH]
                    self._batch_rename(session, [n for _, n in batch], [o for o, _ in batch], keys)
                emptied = {posixpath.dirname(old) for old, _ in pairs}
                for folder in sorted(emptied, key=lambda f: f.count("/"), reverse=True):
                    self._prune(session, folder)
            except DestinationError:
                # A source that was missing (or refused) leaves no empty target folder behind.
                for folder in sorted(targets, key=lambda f: f.count("/"), reverse=True):
                    self._prune(session, folder)
                raise
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None

    def _prune(self, session: Session, folder: str) -> None:
        """Remove ``folder`` and its parents up to the base while they are empty."""
        while folder.startswith(self.base.rstrip("/") + "/") and folder != self.base:
            try:
                session.client.rmdir(folder)
            except OSError:
                return
            self._forget_folder(folder)
            folder = posixpath.dirname(folder)

    # ------------------------------------------------------------------------ read side
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        pending = [start.strip("/")]
        while pending:
            relative = pending.pop()
            entries = self._list_folder(relative)
            self._ahead.remember(relative, [
                (e.filename, int(e.st_size or 0)) for e in entries
                if stat_mode.S_ISREG(e.st_mode or 0) and not e.filename.startswith(PARTIAL_MARK)
            ])  # fmt: skip
            for entry in entries:
                key = f"{relative}/{entry.filename}" if relative else entry.filename
                mode = entry.st_mode or 0
                if stat_mode.S_ISDIR(mode):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        pending.append(key)
                elif (
                    stat_mode.S_ISREG(mode)
                    and key.startswith(prefix)
                    and not entry.filename.startswith(PARTIAL_MARK)
                ):
                    yield _info(key, entry)

    def _list_folder(self, relative: str) -> builtins.list[paramiko.SFTPAttributes]:
        path = posixpath.join(self.base, relative) if relative else self.base
        with self.pool.session() as session:
            try:
                entries = session.client.listdir_attr(path)
            except FileNotFoundError:
                return []
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None
            except OSError as exc:
                raise self._failed("list", self._remote(path), exc) from None
        return sorted(entries, key=lambda e: e.filename)

    def open_read(self, key: str) -> IO[bytes]:
        """The object as a stream of pipelined reads (``_sftp.ReadStream``) on a channel of
        its own, under the stall rule like a write; closing it gives the channel back.

        Each open stream holds one channel, so the readers a restore runs at once spread
        over the pool's connections and never wait on one another's answers. A small file
        of a listed folder being read in order comes from a batch (``_readahead``).
        """
        data = self._ahead.take(key)
        if data is not None:
            return cast(IO[bytes], io.BytesIO(data))
        path = self._path(key)
        with contextlib.ExitStack() as stack:
            guard = stack.enter_context(self._watched(self._read_guard))
            session = stack.enter_context(self.pool.session())
            try:
                handle, attrs = _sftp.open_for_read(session.client, path)
                if attrs is not None and not stat_mode.S_ISREG(attrs.st_mode or stat_mode.S_IFREG):
                    _sftp.close_many(session.client, [handle])
                    raise ObjectNotFound(f"{key} not found in {self.describe('')} (not a file)")
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None
            except OSError as exc:
                if not session.alive():
                    raise self._link_failed(session, exc) from None
                raise self._failed("read", self._remote(path), exc, key) from None
            size = attrs.st_size if attrs is not None else None
            chunk = _sftp.chunk_size(session.connection.transport)
            stream = _sftp.ReadStream(session.client, path, handle, size, chunk)
            reader = _RemoteReader(stream, stack.pop_all(), session, guard, self, path)
        return cast(IO[bytes], reader)

    def _read_small(
        self, keys: builtins.list[str], sizes: builtins.list[int]
    ) -> builtins.list[bytes | None]:
        """``ReadAhead``'s fetch: whole small files in two exchanges, under the read stall rule;
        None for each file that did not hold exactly its listed size (or could not be opened)."""
        paths = [self._path(key) for key in keys]
        with self._watched(self._read_guard) as guard, self.pool.session() as session:
            try:
                found = _sftp.read_small_many(session.client, paths, sizes)
            except BaseException:
                session.broken = True  # answers may be left unread on the channel
                raise
            guard.progress(sum(len(data) for data in found if isinstance(data, bytes)))
        return [data if isinstance(data, bytes) else None for data in found]

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with self.pool.session() as session:
            try:
                attrs = session.client.stat(path)
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None
            except OSError as exc:
                raise self._failed("stat", self._remote(path), exc, key) from None
        if not stat_mode.S_ISREG(attrs.st_mode or 0):
            raise ObjectNotFound(f"{key} not found in {self.describe('')} (not a file)")
        return _info(key, attrs)

    def delete(self, key: str) -> None:
        self._ahead.forget(_folder_of(key))
        path = self._path(key)
        with self.pool.session() as session:
            try:
                session.client.remove(path)
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None
            except OSError as exc:
                raise self._failed("delete", self._remote(path), exc, key) from None

    def close(self) -> None:
        self._ahead.clear()
        self.pool.close()

    # --------------------------------------------------------------------------- errors
    def _failed(
        self, action: str, where: str, exc: OSError, key: str | None = None
    ) -> DestinationError:
        """An SFTP status answer turned into one line naming the remote path."""
        if exc.errno == errno.ENOENT and key is not None and action != "write":
            return ObjectNotFound(f"{key} not found in {self.describe('')}")
        if exc.errno == errno.EACCES:
            return DestinationError(f"permission denied: cannot {action} {where}")
        return DestinationError(f"cannot {action} {where}: {_sftp_text(exc)}")

    def _link_failed(self, session: Session, exc: BaseException) -> DestinationError:
        session.broken = True
        if self.pool.aborted:  # closed by a stall guard or shutdown: say why
            return DestinationError(self.pool.aborted)
        reason = describe_error(exc, self.endpoint.idle_timeout)
        return DestinationError(f"SFTP connection to {self.where} failed: {reason}")


class _InOrder:
    """Hands out a source's chunks in file order to the streams of a split upload.

    Each chunk is read under the lock, so the ``Source`` sees its reads in order (it hashes
    as it goes and keeps nothing aside) while the streams encrypt and send in parallel. The
    first failure (a source error, a refused write, a dropped link) stops every stream.
    """

    def __init__(self, source: Source, chunk: int, guard: StallGuard) -> None:
        self.source = source
        self.chunk = chunk
        self.guard = guard
        self.offset = 0
        self.failed = False
        self.lock = threading.Lock()

    def next(self) -> tuple[int, bytes] | None:
        with self.lock:
            if self.failed or self.offset >= self.source.size:
                return None
            offset = self.offset
            data = self.source.read_at(offset, min(self.chunk, self.source.size - offset))
            self.offset += len(data)
            return offset, data

    def pump(self, stream: _sftp.Stream, failures: builtins.list[BaseException]) -> None:
        """Send chunks until none are left, then wait for every answer; record a failure."""
        try:
            while (piece := self.next()) is not None:
                stream.send(*piece)
                self.guard.progress(len(piece[1]))
            stream.drain()
            stream.raise_if_failed()
        except BaseException as exc:
            self.failed = True
            failures.append(exc)


class _RemoteReader(RawRead):
    """A remote file as a binary stream; closing it returns its SFTP channel to the pool.

    ``read(n)`` joins the stream's pieces (up to 255 KiB each) into ``n`` bytes; what is read
    counts as progress for the stall rule.
    """

    def __init__(self, stream: _sftp.ReadStream, leases: contextlib.ExitStack, session: Session,
                 guard: StallGuard, destination: ScpDestination, path: str) -> None:  # fmt: skip
        super().__init__()
        self._stream, self._leases, self._session = stream, leases, session
        self._guard, self._destination, self._path = guard, destination, path

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, fewer only at the end of the file, as a buffered file reads
        (callers such as the manifest reader take one ``read(n)`` as the whole object)."""
        if size is None or size < 0:
            return self.readall()
        parts: _sftp.Piece = []
        wanted = size
        while wanted > 0 and (piece := self._piece()):
            got = _sftp.piece_size(piece)
            if got > wanted:  # keep the rest for the next read (views: no copy)
                piece, rest = _sftp.cut_piece(piece, wanted)
                self._stream.put_back(rest)
                got = wanted
            parts += piece
            wanted -= got
        # The one copy of the bytes on our side: from paramiko's hand-over into what we return.
        data = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        self._guard.progress(len(data))
        return data

    def _piece(self) -> _sftp.Piece:
        try:
            return self._stream.read()
        except LINK_ERRORS as exc:
            raise self._broken(exc) from None
        except OSError as exc:
            if not self._session.alive():
                raise self._broken(exc) from None
            where = self._destination._remote(self._path)
            raise DestinationError(f"cannot read {where}: {_sftp_text(exc)}") from None

    def readall(self) -> bytes:
        parts: _sftp.Piece = []
        while piece := self._piece():
            self._guard.progress(_sftp.piece_size(piece))
            parts += piece
        return b"".join(parts)

    def _broken(self, exc: BaseException) -> DestinationError:
        if self._guard.tripped:
            self._session.broken = True
            return self._guard.error()
        error = self._destination._link_failed(self._session, exc)
        where = self._destination._remote(self._path)
        return DestinationError(f"cannot read {where}: {error}")

    def close(self) -> None:
        if not self.closed:
            try:
                if not self._session.broken:
                    try:
                        self._stream.abandon()
                    except Exception:
                        self._session.broken = True
            finally:
                self._leases.close()
        super().close()


def _all_read(source: Source) -> None:
    """Every byte was handed out and the file did not grow or change: only now may it be
    committed. (The ``Source`` checks on its last read; this also covers an empty file.)"""
    source.sha256  # noqa: B018 - raises SourceError unless every byte was read and checked


def _folder_of(key: str) -> str:
    """The folder part of a key, as ``list`` names folders ("" for the base)."""
    return key.rpartition("/")[0]


def _sftp_base(destination: str) -> str:
    """The base folder as SFTP paths need it.

    SFTP resolves relative paths against the login's home folder, as ``scp`` does; ``~`` and
    ``~/...`` (which the Go release's ``scp`` left to the remote shell) mean the same here.
    """
    base = destination.strip()
    if base == "~" or base.startswith("~/"):
        base = base[2:].strip("/") or "."
    return base.rstrip("/") or "/"


def _info(key: str, attrs: paramiko.SFTPAttributes) -> ObjectInfo:
    modified = datetime.fromtimestamp(attrs.st_mtime, UTC) if attrs.st_mtime is not None else None
    return ObjectInfo(key=key, size=int(attrs.st_size or 0), modified=modified)


def _sftp_text(exc: OSError) -> str:
    return one_line(exc.strerror or (exc.args[0] if exc.args else "") or type(exc).__name__)
