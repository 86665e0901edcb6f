"""Streaming a file into an SFTP handle with pipelined writes, every answer checked.

paramiko's own ``SFTPFile`` in pipelined mode never looks at the status of its write requests
(a failed write is silently dropped) and its ``close`` swallows errors, and it splits writes
into 32 KiB requests. Here each write request carries up to ``chunk`` bytes (OpenSSH's
``sftp-server`` accepts 255 KiB), up to ``MAX_IN_FLIGHT`` requests are outstanding, every
response is read and a failed one fails the upload. Requests are numbered and registered in
``SFTPClient``'s own table (``request_number``, ``_expecting``) and answers read with its
``_read_response`` (or in bulk by ``_collect``), the primitives ``SFTPFile`` itself uses.

Memory stays bounded: one chunk is read from the source at a time and sending blocks on the
server's channel window (2 MiB for OpenSSH), whatever the file size.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Callable
from typing import IO

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
    int64,
)

#: OpenSSH's sftp-server limit for one write request's data (its limits@openssh.com reply).
OPENSSH_CHUNK = 255 * 1024
#: The size every SFTP server must accept (draft-ietf-secsh-filexfer-02, paramiko's default).
PORTABLE_CHUNK = 32 * 1024
#: One channel read in ``_collect``; a reply larger than MAX_REPLY means the stream is garbled.
BULK_READ = 256 * 1024
MAX_REPLY = 16 * 1024 * 1024
#: Outstanding write requests per file; with 255 KiB chunks this covers several windows.
MAX_IN_FLIGHT = 32


class SourceReadError(Exception):
    """Reading the local stream failed; carries the original OSError to re-raise as-is."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def chunk_size(transport: paramiko.Transport) -> int:
    """255 KiB requests for OpenSSH servers, the portable 32 KiB for anything else."""
    return OPENSSH_CHUNK if "OpenSSH" in (transport.remote_version or "") else PORTABLE_CHUNK


class _Replies:
    """Receives the responses to one file's write requests (paramiko calls ``_async_response``)."""

    def __init__(self, client: paramiko.SFTPClient) -> None:
        self.client = client
        self.outstanding = 0
        self.error: Exception | None = None

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self.outstanding -= 1
        if kind != CMD_STATUS:
            self.error = self.error or SFTPError(f"unexpected reply type {kind} to a write")
            return
        try:
            self.client._convert_status(msg)
        except EOFError as exc:
            self.error = self.error or SFTPError(f"write refused: {exc}")
        except OSError as exc:
            self.error = self.error or exc

    def drain(self, down_to: int = 0) -> None:
        while self.outstanding > down_to:
            self.client._read_response()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error


def open_for_write(client: paramiko.SFTPClient, path: str, create: bool = True) -> bytes:
    """Create or truncate ``path`` (or open the existing file as it is); return the handle."""
    flags = SFTP_FLAG_WRITE | (SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC if create else 0)
    kind, msg = client._request(CMD_OPEN, path, flags, paramiko.SFTPAttributes())
    if kind != CMD_HANDLE:
        raise SFTPError(f"unexpected reply type {kind} to open")
    return msg.get_binary()


def _field(item: object) -> bytes:
    """One request field in SFTP's encoding, as ``SFTPClient._async_request`` encodes it."""
    if isinstance(item, int64):
        return struct.pack(">Q", item)
    if isinstance(item, int):
        return struct.pack(">I", item)
    if isinstance(item, paramiko.SFTPAttributes):
        msg = paramiko.Message()
        item._pack(msg)
        return msg.asbytes()
    data = item.encode("utf-8") if isinstance(item, str) else bytes(item)  # type: ignore[call-overload]
    return struct.pack(">I", len(data)) + data


def _frame(
    client: paramiko.SFTPClient, replies: object, kind: int, *args: object
) -> tuple[int, bytes]:
    """One request numbered and registered as ``SFTPClient._async_request`` does, not yet sent.

    Framing requests here lets the last write, the fstat and the close of a file leave in one
    channel send (one SSH packet for a small file) instead of three.
    """
    body = b"".join(_field(item) for item in args)
    with client._lock:
        num = client.request_number
        client._expecting[num] = replies
        client.request_number += 1
    return num, struct.pack(">IBI", len(body) + 5, kind, num) + body


def _write_frame(
    client: paramiko.SFTPClient, replies: _Replies, handle: bytes, offset: int, data: bytes
) -> bytearray:
    """A WRITE request with the data copied once (``_frame`` would copy it three times)."""
    msg = paramiko.Message()
    with client._lock:
        num = client.request_number
        client._expecting[num] = replies
        client.request_number += 1
    msg.add_int(num)
    msg.add_string(handle)
    msg.add_int64(offset)
    head = msg.asbytes()
    frame = bytearray(struct.pack(">IB", 1 + len(head) + 4 + len(data), CMD_WRITE))
    frame += head
    frame += struct.pack(">I", len(data))
    frame += data
    return frame


def _send(client: paramiko.SFTPClient, frame: bytes | bytearray) -> None:
    """Through a memoryview, so the channel's partial sends do not copy the rest each time."""
    client._write_all(memoryview(frame))


def _read(stream: IO[bytes], size: int) -> bytes:
    try:
        return stream.read(size)
    except OSError as exc:
        raise SourceReadError(exc) from None


def write_handle(
    client: paramiko.SFTPClient, handle: bytes, stream: IO[bytes], chunk: int
) -> tuple[int, int]:
    """Send the whole stream, then fstat and close, all pipelined; check every answer.

    Returns ``(bytes sent, size the server reports)``. The handle is closed on success; on
    failure the caller closes it (``close_quietly``) and removes the file. The server handles
    requests in order, so the fstat sees every write and the close comes last.
    """
    replies = _Replies(client)
    offset = 0
    try:
        data = _read(stream, chunk)
        while True:
            following = _read(stream, chunk) if data else b""
            frame = bytearray()
            if data:
                frame = _write_frame(client, replies, handle, offset, data)
                replies.outstanding += 1
                offset += len(data)
            if not following:
                fstat, fstat_frame = _frame(client, type(None), CMD_FSTAT, handle)
                close, close_frame = _frame(client, type(None), CMD_CLOSE, handle)
                frame += fstat_frame
                frame += close_frame
            _send(client, frame)
            if not following:
                break
            if replies.outstanding > MAX_IN_FLIGHT:
                replies.drain(MAX_IN_FLIGHT // 2)
            elif client.sock.recv_ready():
                replies.drain(replies.outstanding - 1)
            replies.raise_if_failed()
            data = following
        kind, msg = client._read_response(fstat)
        replies.raise_if_failed()
        if kind != CMD_ATTRS:
            raise SFTPError(f"unexpected reply type {kind} to fstat")
        stored = paramiko.SFTPAttributes._from_msg(msg).st_size
        client._read_response(close)
        return offset, int(stored if stored is not None else -1)
    except BaseException:
        # Read what is still owed so the channel can serve the next file; if even that
        # fails, the caller's error handling finds the channel unusable.
        with contextlib.suppress(Exception):
            replies.drain()
        raise


def write_ranges(
    client: paramiko.SFTPClient,
    handle: bytes,
    read_at: Callable[[int, int], bytes],
    ranges: list[tuple[int, int]],
    chunk: int,
    stop: threading.Event,
) -> int:
    """Write the byte ranges ``[start, end)`` read with ``read_at``; wait for every answer.

    One of the streams of a split upload: each stream has its own channel (and send window),
    so while one waits for the server's window to open, the other sends. Returns the bytes
    sent; fewer than the ranges hold when the source ended early. Gives up early (returning
    what was sent) once ``stop`` is set by the other stream's failure.
    """
    replies = _Replies(client)
    sent = 0
    try:
        for start, end in ranges:
            offset = start
            while offset < end and not stop.is_set():
                data = read_at(offset, min(chunk, end - offset))
                if not data:
                    break
                _send(client, _write_frame(client, replies, handle, offset, data))
                replies.outstanding += 1
                offset += len(data)
                sent += len(data)
                if replies.outstanding > MAX_IN_FLIGHT:
                    replies.drain(MAX_IN_FLIGHT // 2)
                elif client.sock.recv_ready():
                    replies.drain(replies.outstanding - 1)
                replies.raise_if_failed()
        replies.drain()
        replies.raise_if_failed()
        return sent
    except BaseException:
        with contextlib.suppress(Exception):
            replies.drain()
        raise


def finish(client: paramiko.SFTPClient, handle: bytes) -> int:
    """fstat then close (one round trip); the size the server reports."""
    fstat, fstat_frame = _frame(client, type(None), CMD_FSTAT, handle)
    close, close_frame = _frame(client, type(None), CMD_CLOSE, handle)
    _send(client, fstat_frame + close_frame)
    kind, msg = client._read_response(fstat)
    if kind != CMD_ATTRS:
        raise SFTPError(f"unexpected reply type {kind} to fstat")
    stored = paramiko.SFTPAttributes._from_msg(msg).st_size
    client._read_response(close)
    return int(stored if stored is not None else -1)


def close_handle(client: paramiko.SFTPClient, handle: bytes) -> None:
    """Close, raising what the server says (a close can report a failed flush)."""
    client._request(CMD_CLOSE, handle)


def close_quietly(client: paramiko.SFTPClient, handle: bytes) -> None:
    """Best effort: the handle may already be closed (fstat failed) or the link gone."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        client._request(CMD_CLOSE, handle)


class _Collector:
    """Receives the responses to one ``exchange``."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self.replies[num] = (kind, msg)


def exchange(
    client: paramiko.SFTPClient, requests: list[tuple[int, tuple[object, ...]]]
) -> list[tuple[int, paramiko.Message]]:
    """Send many requests in one write and return their replies, in request order.

    For batches of small files: 32 opens leave in one send and their handles come back
    together, instead of 32 round trips each waking two threads.
    """
    collector = _Collector()
    framed = [_frame(client, collector, kind, *args) for kind, args in requests]
    _send(client, b"".join(frame for _, frame in framed))
    _collect(client, collector, len(framed))
    return [collector.replies[num] for num, _ in framed]


def _collect(client: paramiko.SFTPClient, collector: _Collector, count: int) -> None:
    """Read replies in bulk until ``collector`` has ``count`` of them.

    ``SFTPClient._read_response`` reads each reply with two channel reads (length, body),
    each taking the channel's lock and condition; a batch's replies arrive together, so
    reading whatever is buffered and splitting it here costs a fraction of that. Only
    requests made on this channel are outstanding and the server answers in order, so
    nothing after the last of these replies can be in the buffer; replies to older requests
    (left by an earlier failure) come first and are routed as paramiko would route them.
    """
    buffer = bytearray()
    while len(collector.replies) < count:
        data = client.sock.recv(BULK_READ)
        if not data:
            raise EOFError("the server closed the SFTP channel")
        buffer += data
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big")
            if size > MAX_REPLY:
                raise SFTPError(f"garbled SFTP reply ({size} bytes announced)")
            if len(buffer) < 4 + size:
                break
            kind = buffer[4]
            msg = paramiko.Message(bytes(buffer[5 : 4 + size]))
            del buffer[: 4 + size]
            num = msg.get_int()
            with client._lock:
                owner = client._expecting.pop(num, None)
            if owner is collector:
                collector.replies[num] = (kind, msg)
            elif owner is not None and owner is not type(None):
                owner._async_response(kind, msg, num)
    if buffer:
        raise SFTPError("unexpected data after the last SFTP reply")


def status_error(client: paramiko.SFTPClient, kind: int, msg: paramiko.Message) -> OSError | None:
    """The error a status reply carries (None for OK); a non-status reply is not an error."""
    if kind != CMD_STATUS:
        return None
    try:
        client._convert_status(msg)
    except EOFError as exc:
        return OSError(f"unexpected end of file: {exc}")
    except OSError as exc:
        return exc
    return None


def reply_error(client: paramiko.SFTPClient, reply: tuple[int, paramiko.Message],
                expected: int) -> OSError | None:  # fmt: skip
    """None when ``reply`` is of the ``expected`` kind (or an OK status when that is expected)."""
    kind, msg = reply
    if kind == expected and kind != CMD_STATUS:
        return None
    error = status_error(client, kind, msg)
    if error is None and kind != expected:
        return OSError(f"unexpected reply type {kind}")
    return error
