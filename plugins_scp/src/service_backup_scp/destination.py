"""The ``scp`` destination: files on an SSH server, written over SFTP with paramiko.

Only SFTP requests are sent (mkdir, open, write, fstat, close, rename, stat, readdir, remove);
no remote shell command ever runs, so no path can be interpreted by a shell and a login shell's
rc files cost nothing. Each file is written under a temporary name in its folder and renamed
into place (``posix-rename@openssh.com``, which replaces atomically) only after the server
reported the expected size, so a half-written file never carries its final name.

Three ways up, same guarantees: ``write`` streams a file with pipelined 255 KiB writes;
files of ``SPLIT_THRESHOLD`` and more go as two streams on two channels; ``write_batch``
(used by this plugin's upload hook, ``upload.py``) sends many small files in three exchanges.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import posixpath
import stat as stat_mode
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, cast

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_REMOVE,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
    int64,
)

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound, SourceError
from service_backup.source import Source

from . import _sftp
from ._keys import KeyProblem, load_private_key
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
from .config import ScpConfig

PARTIAL_MARK = ".service-backup-partial-"
#: Files this big (read from a real file) go up as two parallel streams.
SPLIT_THRESHOLD = 64 * 1024 * 1024
SPLIT_SEGMENT = 16 * 1024 * 1024
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
    bounded (a streamed file holds one 255 KiB chunk, a batch at most 1 MiB).
    """

    file_concurrency = 8
    #: ``posix-rename`` is a metadata operation: the run stages same-day re-runs and renames.
    can_rename = True
    #: Seconds for TCP connect, banner, key exchange and authentication, each.
    connect_timeout: float = CONNECT_TIMEOUT
    #: Seconds a channel waits for the server (a reply, send window) before the link is given up.
    idle_timeout: float = IDLE_TIMEOUT

    def __init__(self, config: ScpConfig, context: DestinationContext) -> None:
        self.server = config.server
        self.base = _sftp_base(config.destination)
        self.name = context.display_name
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
            lambda: open_transport(self.endpoint, guard),
            self.where,
            timeout=self.endpoint.idle_timeout,
        )
        #: SFTP has no client-chosen page size: OpenSSH answers each READDIR with up to 100
        #: names and ``list`` reads every directory to its end. Kept for the common interface.
        self.list_page_size = 100
        self._folders: set[str] = set()
        self._folders_lock = threading.Lock()

    # ------------------------------------------------------------------------------ paths
    def _path(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise DestinationError(f"invalid key {key!r}")
        return posixpath.join(self.base, *parts)

    def _remote(self, path: str) -> str:
        return f"{self.server}:{path}"

    def describe(self, prefix: str) -> str:
        return self._remote(posixpath.join(self.base, prefix) if prefix else self.base)

    # ---------------------------------------------------------------------------- folders
    def ensure_location(self) -> None:
        with self.pool.session() as session:
            self._make_folders(session, self.base)

    def _make_folders(self, session: Session, path: str) -> None:
        """mkdir -p through SFTP: create each missing component, tolerate existing ones.

        The common case (parent exists) costs one request. A failure is looked at: an existing
        folder (made by another thread, or OpenSSH's generic "Failure" for EEXIST) is fine;
        a missing one has its parents made first, so an error names the first component that
        cannot be created.
        """
        if path in self._folders or path in ("/", ".", ""):
            return
        try:
            try:
                session.client.mkdir(path)
            except OSError:
                if not self._is_folder(session, path):
                    # Make the parent (a no-op when known) and try again: also right when
                    # another thread created the parent since the first attempt.
                    self._make_folders(session, posixpath.dirname(path))
                    try:
                        session.client.mkdir(path)
                    except OSError as second:
                        if not self._is_folder(session, path):
                            raise self._mkdir_failed(path, second) from None
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

    def _forget_folder(self, path: str) -> None:
        with self._folders_lock:
            self._folders.discard(path)

    # ------------------------------------------------------------------------------ write
    def write(self, key: str, source: Source) -> ObjectInfo:
        with source.open() as stream:
            return self._write_stream(key, stream, source.size)

    def _write_stream(self, key: str, stream: IO[bytes], size: int) -> ObjectInfo:
        final = self._path(key)
        folder = posixpath.dirname(final)
        temp = posixpath.join(folder, f"{PARTIAL_MARK}{uuid.uuid4().hex}")
        with self.pool.session() as session:
            self._make_folders(session, folder)
            sent, stored = (
                self._upload_split(session, stream, size, temp, final)
                if size >= SPLIT_THRESHOLD and _positional(stream)
                else self._upload(session, stream, temp, final)
            )
            try:
                if stored != sent:
                    raise DestinationError(
                        f"{self._remote(final)}: the server stored {stored} bytes of {sent} "
                        "sent; upload incomplete"
                    )
                if sent != size:
                    raise SourceError(
                        f"the source of {key} gave {sent} bytes, {size} expected: it changed "
                        "during the upload"
                    )
                self._rename(session, temp, final)
            except BaseException:
                self._remove_quietly(session, temp)
                raise
        return ObjectInfo(key=key, size=stored)

    def _upload(
        self, session: Session, stream: IO[bytes], temp: str, final: str
    ) -> tuple[int, int]:
        client = session.client
        handle = None
        try:
            try:
                handle = _sftp.open_for_write(client, temp)
            except FileNotFoundError:  # the folder vanished since it was made: once more
                self._forget_folder(posixpath.dirname(temp))
                self._make_folders(session, posixpath.dirname(temp))
                handle = _sftp.open_for_write(client, temp)
            chunk = _sftp.chunk_size(session.connection.transport)
            result = _sftp.write_handle(client, handle, stream, chunk)
            handle = None  # closed by write_handle
            return result
        except _sftp.SourceReadError as exc:
            self._abandon(session, handle, temp)
            raise exc.error from None
        except LINK_ERRORS as exc:
            raise self._link_failed(session, exc) from None
        except OSError as exc:
            self._abandon(session, handle, temp)
            raise self._failed("write", self._remote(final), exc) from None
        except BaseException:
            self._abandon(session, handle, temp)
            raise

    def _upload_split(
        self, session: Session, stream: IO[bytes], size: int, temp: str, final: str
    ) -> tuple[int, int]:
        """A big file as two streams on two channels, each writing alternate 16 MiB ranges.

        One stream stalls whenever the server's 2 MiB channel window is used up until its
        window adjustment arrives; a second channel (another connection when one is free)
        keeps data flowing meanwhile, and the client's work is spread over two threads.
        Falls back to one stream when no second channel is free right now.
        """
        with self.pool.spare_session() as second:
            if second is None:
                return self._upload(session, stream, temp, final)
            client = session.client
            handle = extra = None
            read_at = _reader_at(stream)
            segments = [(s, min(s + SPLIT_SEGMENT, size)) for s in range(0, size, SPLIT_SEGMENT)]
            try:
                handle = _sftp.open_for_write(client, temp)
                extra = extra_handle = _sftp.open_for_write(second.client, temp, create=False)
                chunk = _sftp.chunk_size(session.connection.transport)
                outcome: list[int | BaseException] = []
                failed = threading.Event()

                def other_half() -> None:
                    try:
                        outcome.append(_sftp.write_ranges(
                            second.client, extra_handle, read_at, segments[1::2], chunk, failed
                        ))  # fmt: skip
                    except BaseException as exc:
                        failed.set()
                        outcome.append(exc)

                helper = threading.Thread(target=other_half, name="upload-split", daemon=True)
                helper.start()
                try:
                    sent = _sftp.write_ranges(
                        client, handle, read_at, segments[0::2], chunk, failed
                    )
                except BaseException:
                    failed.set()
                    raise
                finally:
                    helper.join()
                if isinstance(outcome[0], BaseException):
                    raise outcome[0]
                sent += outcome[0]
                _sftp.close_handle(second.client, extra)
                extra = None
                stored = _sftp.finish(client, handle)
                handle = None
                return sent, stored
            except (_sftp.SourceReadError, OSError, *LINK_ERRORS) as exc:
                if isinstance(exc, LINK_ERRORS):
                    for lent in (session, second):
                        lent.broken = True
                    raise self._link_failed(session, exc) from None
                self._abandon(session, handle, temp, second, extra)
                if isinstance(exc, _sftp.SourceReadError):
                    raise exc.error from None
                raise self._failed("write", self._remote(final), exc) from None
            except BaseException:
                self._abandon(session, handle, temp, second, extra)
                raise

    def _abandon(
        self,
        session: Session,
        handle: bytes | None,
        temp: str,
        second: Session | None = None,
        extra: bytes | None = None,
    ) -> None:
        if second is not None and extra is not None:
            _sftp.close_quietly(second.client, extra)
        if handle is not None:
            _sftp.close_quietly(session.client, handle)
        self._remove_quietly(session, temp)

    def _remove_quietly(self, session: Session, path: str) -> None:
        if session.broken:
            return
        with contextlib.suppress(OSError, *LINK_ERRORS):
            session.client.remove(path)

    def _rename(self, session: Session, temp: str, final: str) -> None:
        try:
            session.client.posix_rename(temp, final)
        except LINK_ERRORS as exc:
            raise self._link_failed(session, exc) from None
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
    def small_file_limit(self) -> int:
        """Files up to this size fit one write request and may go through ``write_batch``."""
        with self.pool.session() as session:
            return _sftp.chunk_size(session.connection.transport)

    def write_batch(self, items: list[tuple[str, bytes]]) -> list[ObjectInfo]:
        """Store several small files (each at most ``small_file_limit()``) in three round trips.

        The same guarantees as ``write``: each goes to a temporary name, its size is checked
        with fstat after the write, and only then is it renamed into place. All opens leave
        in one send, then all writes, fstats and closes, then all renames.
        """
        finals = [self._path(key) for key, _ in items]
        temps = [
            posixpath.join(posixpath.dirname(f), f"{PARTIAL_MARK}{uuid.uuid4().hex}")
            for f in finals
        ]
        with self.pool.session() as session:
            for folder in dict.fromkeys(posixpath.dirname(f) for f in finals):
                self._make_folders(session, folder)
            try:
                self._batch_write(session, items, finals, temps)
                self._batch_rename(session, finals, temps)
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None
        return [ObjectInfo(key=key, size=len(data)) for key, data in items]

    def _batch_write(
        self, session: Session, items: list[tuple[str, bytes]], finals: list[str], temps: list[str]
    ) -> None:
        client = session.client
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
        opened = _sftp.exchange(
            client, [(CMD_OPEN, (temp, flags, paramiko.SFTPAttributes())) for temp in temps]
        )
        failure: DestinationError | None = None
        handles: list[bytes] = []
        for reply, final in zip(opened, finals, strict=True):
            error = _sftp.reply_error(client, reply, CMD_HANDLE)
            if error is None:
                handles.append(reply[1].get_binary())
            else:
                failure = failure or self._failed("write", self._remote(final), error)
        if failure is not None:
            with contextlib.suppress(OSError, *LINK_ERRORS):
                _sftp.exchange(client, [(CMD_CLOSE, (h,)) for h in handles])
            self._batch_remove(session, temps)
            raise failure
        requests: list[tuple[int, tuple[object, ...]]] = []
        for handle, (_, data) in zip(handles, items, strict=True):
            if data:
                requests.append((CMD_WRITE, (handle, int64(0), data)))
            requests += [(CMD_FSTAT, (handle,)), (CMD_CLOSE, (handle,))]
        replies = iter(_sftp.exchange(client, requests))
        for (_, data), final in zip(items, finals, strict=True):
            written = _sftp.reply_error(client, next(replies), CMD_STATUS) if data else None
            fstat, closed = next(replies), next(replies)
            error = written or _sftp.reply_error(client, fstat, CMD_ATTRS)
            error = error or _sftp.reply_error(client, closed, CMD_STATUS)
            if error is not None:
                failure = failure or self._failed("write", self._remote(final), error)
                continue
            stored = paramiko.SFTPAttributes._from_msg(fstat[1]).st_size
            if stored != len(data):
                failure = failure or DestinationError(
                    f"{self._remote(final)}: the server stored {stored} bytes of {len(data)} "
                    "sent; upload incomplete"
                )
        if failure is not None:
            self._batch_remove(session, temps)
            raise failure

    def _batch_rename(self, session: Session, finals: list[str], temps: list[str]) -> None:
        client = session.client
        replies = _sftp.exchange(
            client,
            [
                (CMD_EXTENDED, ("posix-rename@openssh.com", temp, final))
                for temp, final in zip(temps, finals, strict=True)
            ],
        )
        failure: DestinationError | None = None
        leftovers = []
        for reply, temp, final in zip(replies, temps, finals, strict=True):
            error = _sftp.reply_error(client, reply, CMD_STATUS)
            if error is None:
                continue
            if "unsupported" in str(error).lower():
                self._rename_portably(session, temp, final)
                continue
            failure = failure or self._failed("rename into", self._remote(final), error)
            leftovers.append(temp)
        if failure is not None:
            self._batch_remove(session, leftovers)
            raise failure

    def _batch_remove(self, session: Session, paths: list[str]) -> None:
        with contextlib.suppress(OSError, *LINK_ERRORS):
            _sftp.exchange(session.client, [(CMD_REMOVE, (path,)) for path in paths])

    # ---------------------------------------------------------------------------- rename
    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """Pipelined ``posix-rename`` (a few hundred per exchange), then prune emptied folders."""
        if not moves:
            return
        pairs = [(self._path(old), self._path(new)) for old, new in moves]
        with self.pool.session() as session:
            for folder in dict.fromkeys(posixpath.dirname(new) for _, new in pairs):
                self._make_folders(session, folder)
            try:
                for start in range(0, len(pairs), RENAME_BATCH):
                    batch = pairs[start : start + RENAME_BATCH]
                    self._batch_rename(session, [n for _, n in batch], [o for o, _ in batch])
                emptied = {posixpath.dirname(old) for old, _ in pairs}
                for folder in sorted(emptied, key=lambda f: f.count("/"), reverse=True):
                    self._prune(session, folder)
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
            for entry in self._list_folder(relative):
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
        path = self._path(key)
        lease = self.pool.session()
        session = lease.__enter__()
        try:
            handle = session.client.open(path, "rb")
            handle.MAX_REQUEST_SIZE = _sftp.chunk_size(session.connection.transport)
        except BaseException as exc:
            error = self._link_failed(session, exc) if isinstance(exc, LINK_ERRORS) else None
            lease.__exit__(None, None, None)  # after _link_failed marked a dead channel
            if error is not None:
                raise error from None
            if isinstance(exc, OSError):
                raise self._failed("read", self._remote(path), exc, key) from None
            raise
        reader = _RemoteReader(
            handle, lease, session, self._remote(path), self.endpoint.idle_timeout
        )
        return cast(IO[bytes], reader)

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
        path = self._path(key)
        with self.pool.session() as session:
            try:
                session.client.remove(path)
            except LINK_ERRORS as exc:
                raise self._link_failed(session, exc) from None
            except OSError as exc:
                raise self._failed("delete", self._remote(path), exc, key) from None

    def close(self) -> None:
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
        reason = describe_error(exc, self.endpoint.idle_timeout)
        return DestinationError(f"SFTP connection to {self.where} failed: {reason}")


class _RemoteReader(io.RawIOBase):
    """A remote file as a binary stream; closing it returns its SFTP channel to the pool."""

    def __init__(self, handle: paramiko.SFTPFile, lease: contextlib.AbstractContextManager,
                 session: Session, where: str, timeout: float) -> None:  # fmt: skip
        super().__init__()
        self._handle, self._lease, self._session = handle, lease, session
        self._where, self._timeout = where, timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._handle.read(len(buffer))
        except (OSError, *LINK_ERRORS) as exc:
            if isinstance(exc, LINK_ERRORS):
                self._session.broken = True
            reason = describe_error(exc, self._timeout)
            raise DestinationError(f"cannot read {self._where}: {reason}") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, *LINK_ERRORS):
                self._handle.close()
            self._lease.__exit__(None, None, None)
        super().close()


def _sftp_base(destination: str) -> str:
    """The base folder as SFTP paths need it.

    SFTP resolves relative paths against the login's home folder, as ``scp`` does; ``~`` and
    ``~/...`` (which the Go release's ``scp`` left to the remote shell) mean the same here.
    """
    base = destination.strip()
    if base == "~" or base.startswith("~/"):
        base = base[2:].strip("/") or "."
    return base.rstrip("/") or "/"


def _positional(stream: IO[bytes]) -> bool:
    """Whether the stream is a regular file that can be read at any offset (pread)."""
    try:
        return stat_mode.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _reader_at(stream: IO[bytes]) -> Callable[[int, int], bytes]:
    """``pread`` on the stream's file; a read error is raised again through the stream itself,
    so it carries the stream's own wording (the core's names the source file)."""
    fd = stream.fileno()
    lock = threading.Lock()

    def read_at(offset: int, size: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError:
            pass
        try:
            with lock:
                stream.seek(offset)
                return stream.read(size)
        except OSError as exc:
            raise _sftp.SourceReadError(exc) from None

    return read_at


def _info(key: str, attrs: paramiko.SFTPAttributes) -> ObjectInfo:
    modified = datetime.fromtimestamp(attrs.st_mtime, UTC) if attrs.st_mtime is not None else None
    return ObjectInfo(key=key, size=int(attrs.st_size or 0), modified=modified)


def _sftp_text(exc: OSError) -> str:
    text = exc.strerror or (str(exc.args[0]) if exc.args else "") or type(exc).__name__
    return " ".join(str(text).split())
