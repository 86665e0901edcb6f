"""SFTP requests framed and pipelined here, through paramiko's private request machinery.

Why not paramiko's public ``SFTPFile``: it splits writes into 32 KiB requests, its pipelined
mode drops the status of any write answer it happens not to wait for (a failed write in the
middle of a file goes unnoticed), its ``close`` swallows errors, and every request of a small
file is its own round trip with two thread wake-ups per answer. Measured on loopback against
OpenSSH 9.2 on 2 cores, 2,000 files of 16 KiB over 8 channels: 1.6-1.8 s wall and 1.1-1.3 s
client CPU through the public API, 0.4 s and 0.25 s with these batches; one 256 MiB stream:
0.9 s client CPU through a pipelined ``SFTPFile`` (255 KiB requests), 0.5 s here.

So requests are numbered from ``SFTPClient``'s own counter (``request_number`` under
``_lock``) and sent with ``_write_all``, the primitives ``SFTPFile`` itself uses; answers are
read from the channel in bulk and split here (``_Replies``), and an answer to a request
paramiko made itself (left unread by an earlier failure) goes to the owner in its
``_expecting`` table; attributes go through ``SFTPAttributes._pack`` / ``_from_msg``. Every
private name used is listed in ``PRIVATE_API``; the plugin pins paramiko to the minor versions
it was tested with, and a test fails loudly when any of these names or signatures changes.
Nothing outside this module frames SFTP requests or knows a ``CMD_*`` number.

Read answers are handed out as views of the bytes paramiko made for each SSH packet: the
channel's receive buffer is a ``_pipe.PacketPipe`` (``use_packet_pipe``), which keeps those
``bytes`` as they are instead of appending them to one array and copying them out twice, and
an answer is a list of views of them (a ``Piece``; 255 KiB spans eight packets). The join in
the destination's reader is then the one copy of a byte on our side. Reading 1 GiB with
sha256 in-process (interleaved, same sshd, medians of 4): client CPU 2.94 -> 2.38 s, minor
page faults 128k -> 45k; 64 MiB under callgrind 3.09G -> 2.68G instructions. What is left is
paramiko's: its transport thread (~1.3 s per GiB: one packet of 32 KiB at a time, sshd caps
them whatever maximum we announce, four copies of each byte) and the reader's sha256.
Checked again: announcing 256 KiB packets, 256 MiB still came as 7,324 packets of 32 KiB
(and two bigger ones); reading one file as two halves on two connections at once (256 MiB,
3 interleaved runs) cost 0.80-1.00 s of client CPU against 0.57-0.75 s for one stream, more
sshd CPU too, and no shorter wall time.

A write request leaves as packet-sized pieces (``_send_write``): its head with the first
bytes of data, then a view of the rest, never joined into one buffer. paramiko copies each
byte five times on its way to the socket (into its Message, the packet, the packet with its
padding, the cipher's input, the length joined to the cipher's output); the join was a sixth,
into a fresh 255 KiB allocation each time. 200 files of 1 MiB: 7,223 packets either way,
minor page faults 25.7k -> 17.7k, 887M -> 867M instructions for 20 of them (callgrind,
sha256 included).

Memory stays bounded: a stream keeps at most ``MAX_IN_FLIGHT`` write requests outstanding
and sending blocks on the server's channel window (2 MiB for OpenSSH), whatever the file size;
a ``ReadStream`` keeps at most ``READ_IN_FLIGHT`` read requests outstanding, asks for more only
as its reader takes data, so the server sends at most those answers ahead (the views keep only
their own packets' bytes alive: the answers owed plus the ones received ahead of the reader,
about ``READ_IN_FLIGHT`` answers, 4 MiB, per stream; the 16 MiB receive window is never the
limit, see ``_session.WINDOW_SIZE``).
Measured in-process on loopback (loaded 2-core machine, CPU including sha256): one 256 MiB
file 1.0 s through ``SFTPFile.read`` (one request in flight), 0.5-0.6 s here; 2,000 files of
16 KiB on 8 threads 1.6-3.0 s, 0.7-1.1 s here.
"""

from __future__ import annotations

import contextlib
import inspect
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import paramiko
from paramiko.buffered_pipe import BufferedPipe
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_FSETSTAT,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_MKDIR,
    CMD_OPEN,
    CMD_READ,
    CMD_REMOVE,
    CMD_SETSTAT,
    CMD_STAT,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
    int64,
)

from ._pipe import PacketPipe, Pieces

#: OpenSSH's sftp-server limit for one write request's data (its limits@openssh.com reply).
OPENSSH_CHUNK = 255 * 1024
#: The size every SFTP server must accept (draft-ietf-secsh-filexfer-02, paramiko's default).
PORTABLE_CHUNK = 32 * 1024
#: One channel read in ``_collect``; a reply larger than MAX_REPLY means the stream is garbled.
BULK_READ = 256 * 1024
MAX_REPLY = 16 * 1024 * 1024
#: Outstanding write requests per stream; with 255 KiB chunks this covers several windows.
MAX_IN_FLIGHT = 32
#: Outstanding read requests per stream: 16 x 255 KiB, 4 MiB, what a stream may hold in
#: memory (the channel's receive window, ``_session.WINDOW_SIZE``, is larger and never
#: holds the server back).
READ_IN_FLIGHT = 16
#: One channel read when reading a file: whatever the channel holds, up to every answer a
#: stream has outstanding (``READ_IN_FLIGHT`` x ``OPENSSH_CHUNK``). With a ``PacketPipe`` a
#: read moves no bytes, but fewer reads mean fewer wake-ups; without one (paramiko's
#: ``BufferedPipe``), a read of ``n`` bytes moved the rest of the buffer to the front, each
#: byte up to three more times.
BULK_READ_DATA = 4 * 1024 * 1024

#: ``Channel.send`` puts at most the server's maximum packet size less this in one packet
#: (``Channel._wait_for_send_window``); ``packet_room`` sizes the pieces of a write by it.
PARAMIKO_PACKET_HEADROOM = 64
#: A floor for ``packet_room`` (a server announcing a tiny maximum gets small packets anyway).
MIN_PACKET_ROOM = 1024

#: The private parts of paramiko this module relies on: (owner, name, parameters or None for
#: an attribute). ``tests/scp`` checks each against the installed paramiko.
PRIVATE_API: tuple[tuple[type, str, tuple[str, ...] | None], ...] = (
    (paramiko.SFTPClient, "_request", ("self", "t", "args")),
    (paramiko.SFTPClient, "_convert_status", ("self", "msg")),
    (paramiko.SFTPClient, "_write_all", ("self", "out")),
    (paramiko.SFTPAttributes, "_from_msg", ("msg", "filename", "longname")),
    (paramiko.SFTPAttributes, "_pack", ("self", "msg")),
)
#: Instance attributes of a connected ``SFTPClient`` used here (not visible on the class).
PRIVATE_CLIENT_ATTRIBUTES = ("_lock", "_expecting", "request_number", "sock")
#: Undocumented attributes of its ``Channel``: the receive buffer ``use_packet_pipe``
#: replaces (``Channel.recv`` reads it, ``Channel._feed`` feeds it), and the server's maximum
#: packet size (``packet_room``).
PRIVATE_CHANNEL_ATTRIBUTES = ("in_buffer", "out_max_packet_size")

#: A request: its ``CMD_*`` kind and its fields, as ``SFTPClient._async_request`` takes them.
Request = tuple[int, tuple[object, ...]]
#: An answer: its kind and its bytes after the request number.
Reply = tuple[int, bytes]
#: Takes an answer (request number, kind, payload) and says whether it was one it awaited;
#: the payload is bytes, or views of a DATA answer's data (a ``Piece``, ``_Replies.views``).
Route = Callable[[int, int, Any], bool]


def private_api_problems(client: paramiko.SFTPClient | None = None) -> list[str]:
    """What no longer matches in the installed paramiko (empty when all is as expected)."""
    problems = []
    for owner, name, parameters in PRIVATE_API:
        member = getattr(owner, name, None)
        if member is None:
            problems.append(f"{owner.__name__}.{name} is gone")
            continue
        if parameters is not None:
            found = tuple(inspect.signature(member).parameters)
            if owner is paramiko.SFTPAttributes and name == "_from_msg":
                found = tuple(inspect.signature(member.__func__).parameters)[1:]  # type: ignore[attr-defined]
            if found != parameters:
                problems.append(f"{owner.__name__}.{name}{found} is not {parameters}")
    if client is not None:
        problems += [
            f"SFTPClient has no attribute {name}"
            for name in PRIVATE_CLIENT_ATTRIBUTES
            if not hasattr(client, name)
        ]
        problems += [
            f"Channel has no attribute {name}"
            for name in PRIVATE_CHANNEL_ATTRIBUTES
            if not hasattr(client.get_channel(), name)
        ]
    problems += [
        f"BufferedPipe.{name} has no counterpart in PacketPipe"
        for name in dir(BufferedPipe)
        if (not name.startswith("_") or name == "__len__") and not hasattr(PacketPipe, name)
    ]
    return problems


def chunk_size(transport: paramiko.Transport) -> int:
    """255 KiB requests for OpenSSH servers, the portable 32 KiB for anything else."""
    return OPENSSH_CHUNK if "OpenSSH" in (transport.remote_version or "") else PORTABLE_CHUNK


def mode_attributes(mode: int | None) -> paramiko.SFTPAttributes:
    """Attributes carrying only permissions (none at all: the server's default mode)."""
    attributes = paramiko.SFTPAttributes()
    if mode is not None:
        attributes.st_mode = mode
    return attributes


# ------------------------------------------------------------------------------ framing
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


def _number(client: paramiko.SFTPClient) -> int:
    """The next request number, taken from paramiko's counter under its lock.

    Not entered in ``SFTPClient._expecting`` (a weak-reference dictionary, costly per
    request): this module reads its own answers (``_Replies``), and routes any answer it is
    not waiting for to the owner paramiko registered, as paramiko would.
    """
    with client._lock:
        num = int(client.request_number)
        client.request_number += 1
    return num


def _write_head(num: int, encoded_handle: bytes, offset: int, length: int) -> bytes:
    """A WRITE request up to its data: length, kind, number, handle, offset, data length."""
    size = 1 + 4 + len(encoded_handle) + 8 + 4 + length
    return (
        struct.pack(">IBI", size, CMD_WRITE, num)
        + encoded_handle
        + struct.pack(">QI", offset, length)
    )


def packet_room(channel: paramiko.Channel) -> int:
    """How many bytes of channel data paramiko puts in one SSH packet on ``channel``.

    ``Channel.send`` sends at most the server's maximum packet size less
    ``PARAMIKO_PACKET_HEADROOM`` per call (32,704 bytes for OpenSSH's 32 KiB): pieces of
    exactly that size each become one packet (``tests/scp`` checks the figure against the
    installed paramiko through ``Channel.send``'s answer).
    """
    return max(MIN_PACKET_ROOM, int(channel.out_max_packet_size) - PARAMIKO_PACKET_HEADROOM)


def _send_write(channel: paramiko.Channel, room: int, head: bytes, data: bytes) -> None:
    """A WRITE request (``head`` and ``data``) as packet-sized pieces, without joining them.

    Joining the request into one buffer copied every byte once more, into a fresh 255 KiB
    allocation (page faults too). Here the first piece is the head and the first bytes of the
    data (one packet's worth copied); the rest goes as a view, which paramiko cuts into
    packets of ``room`` bytes: the same packets as before, one copy fewer.
    """
    first = room - len(head)
    if len(data) <= first:
        _send_all(channel, head + data)
        return
    view = memoryview(data)
    _send_all(channel, head + view[:first])
    _send_all(channel, view[first:])


def _send_all(channel: paramiko.Channel, data: bytes | memoryview) -> None:
    """``SFTPClient._write_all`` on the channel: a closed channel raises (``sendall`` would
    loop on a channel that stopped taking data)."""
    while len(data):
        sent = channel.send(data)
        if sent <= 0:
            raise EOFError("the SFTP channel stopped taking data")
        data = data[sent:]


def _send(client: paramiko.SFTPClient, frame: bytes | bytearray | memoryview) -> None:
    """Through a memoryview, so the channel's partial sends do not copy the rest each time."""
    client._write_all(memoryview(frame))


def _status_error(client: paramiko.SFTPClient, msg: paramiko.Message) -> OSError | None:
    try:
        client._convert_status(msg)
    except EOFError as exc:
        return OSError(f"unexpected end of file: {exc}")
    except OSError as exc:
        return exc
    return None


def reply_error(client: paramiko.SFTPClient, reply: Reply, expected: int) -> OSError | None:
    """None when ``reply`` is of the ``expected`` kind (or an OK status when that is expected)."""
    kind, payload = reply
    if kind == expected and kind != CMD_STATUS:
        return None
    if kind == CMD_STATUS:
        if payload[:4] == b"\0\0\0\0":  # SSH_FX_OK, the common case: no Message needed
            return None
        return _status_error(client, paramiko.Message(payload))
    return OSError(f"unexpected reply type {kind}")


def _stored_size(payload: bytes | paramiko.Message) -> int:
    msg = payload if isinstance(payload, paramiko.Message) else paramiko.Message(payload)
    size = paramiko.SFTPAttributes._from_msg(msg).st_size
    return int(size if size is not None else -1)


# ------------------------------------------------------------------------------ streams
class Stream:
    """One file's pipelined writes on one channel; every answer is checked.

    ``send`` frames a write and keeps at most ``MAX_IN_FLIGHT`` outstanding; ``finish`` sends
    (optionally a mode change,) fstat and close in one send and returns the size the server
    reports. The server handles a channel's requests in order, so the fstat sees every write.

    Answers are read in bulk (``_Replies``), not one by one through paramiko's
    ``_read_response`` (two locked channel reads each, ~15% of the sending thread's CPU on
    1 MiB files). A file of a few requests (a 1 MiB file is five) has its writes' answers read
    together with the fstat and close answers; a longer stream reads them on the way, half of
    ``MAX_IN_FLIGHT`` at a time, so a refused write is noticed within that many requests.
    """

    def __init__(self, client: paramiko.SFTPClient, handle: bytes) -> None:
        self.client = client
        self.handle = handle
        self.encoded = _field(handle)
        self.channel = client.get_channel()
        self.room = packet_room(self.channel)
        self.replies = _Replies(client)
        self.writes: set[int] = set()
        self.error: OSError | None = None
        self.closed = False

    @property
    def outstanding(self) -> int:
        return len(self.writes)

    def _answer(self, num: int, kind: int, payload: bytes) -> None:
        self.writes.discard(num)
        if kind != CMD_STATUS:
            self.error = self.error or SFTPError(f"unexpected reply type {kind} to a write")
            return
        self.error = self.error or reply_error(self.client, (kind, payload), CMD_STATUS)

    def send(self, offset: int, data: bytes) -> None:
        num = _number(self.client)
        self.writes.add(num)
        _send_write(
            self.channel, self.room, _write_head(num, self.encoded, offset, len(data)), data
        )
        if len(self.writes) > MAX_IN_FLIGHT:
            self.drain(MAX_IN_FLIGHT // 2)
            self.raise_if_failed()

    def drain(self, down_to: int = 0) -> None:
        """Read answers until at most ``down_to`` writes are unanswered."""
        self.replies.read(lambda: len(self.writes) <= down_to, self._route)

    def _route(self, num: int, kind: int, payload: bytes) -> bool:
        if num in self.writes:
            self._answer(num, kind, payload)
            return True
        return False

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self, mode: int | None) -> int:
        """fstat and close (setting ``mode`` again where needed); the stored size.

        One send; then every answer still owed (the writes', then these) is read in bulk.
        """
        client = self.client
        encoded = _field(self.handle)
        requests = [(CMD_FSTAT, encoded), (CMD_CLOSE, encoded)]
        if exact_mode(mode) is not None:
            requests.insert(0, (CMD_FSETSTAT, encoded + _field(mode_attributes(mode))))
        numbers = {_number(client): index for index, _ in enumerate(requests)}
        frames = [
            struct.pack(">IBI", len(body) + 5, kind, num) + body
            for num, (kind, body) in zip(numbers, requests, strict=True)
        ]
        _send(client, b"".join(frames))
        self.closed = True
        answers: list[Reply | None] = [None] * len(requests)

        def route(num: int, kind: int, payload: bytes) -> bool:
            if (index := numbers.get(num)) is not None:
                answers[index] = (kind, payload)
                return True
            return self._route(num, kind, payload)

        self.replies.read(lambda: all(answers), route)
        self.replies.check_empty()
        self.raise_if_failed()
        if self.writes:
            raise SFTPError(f"{len(self.writes)} write answer(s) missing before the fstat answer")
        *changed, fstat, closed = cast(list[Reply], answers)
        for reply in (*changed, fstat, closed):
            if reply[0] == CMD_STATUS and (error := reply_error(client, reply, CMD_STATUS)):
                raise error
        if fstat[0] != CMD_ATTRS:
            raise SFTPError(f"unexpected reply type {fstat[0]} to fstat")
        return _stored_size(fstat[1])

    def abandon(self) -> None:
        """After a failure: read what is still owed and close the handle, best effort."""
        with contextlib.suppress(Exception):
            self.drain()
            self.replies.check_empty()
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self.client._request(CMD_CLOSE, self.handle)


class _Replies:
    """Answers read from one channel in bulk and split here.

    ``SFTPClient._read_response`` reads each answer with two channel reads (length, body),
    each taking the channel's lock and condition; answers arrive in bunches, so reading
    whatever is buffered and splitting it costs a fraction of that. What was read waits in
    ``segments`` (views of the pieces the channel handed over, see ``_pipe``) until it makes
    whole answers. Answers nobody here waits for (left by an earlier failure on this
    channel) are routed to the owner paramiko registered, as paramiko would route them.
    """

    def __init__(self, client: paramiko.SFTPClient, bulk: int = BULK_READ,
                 data_only: bool = False, views: bool = False) -> None:  # fmt: skip
        self.client = client
        self.bulk = bulk
        #: A DATA answer is routed as its data alone (its length checked here): one copy of
        #: the bytes from the channel's to the caller's, not three.
        self.data_only = data_only
        #: With ``data_only``: the data as a list of read-only views of the pieces the
        #: channel handed over (an answer of 255 KiB spans the data of eight SSH packets), no
        #: copy at all (``ReadStream``; its reader joins the views into what it hands out).
        #: A view keeps its piece alive, so only a reader that consumes answers as they come
        #: uses this.
        self.views = views
        self.segments: deque[memoryview] = deque()
        self.size = 0

    def read(self, done: Callable[[], bool], route: Route) -> None:
        """Read and route answers (``route`` says whether it took one) until ``done()``."""
        self._split(route)
        while not done():
            data = _receive(self.client, self.bulk, self._lacking())
            if not len(data):
                raise EOFError("the server closed the SFTP channel")
            for part in data.parts if isinstance(data, Pieces) else (data,):
                self.segments.append(memoryview(part))
            self.size += len(data)
            self._split(route)

    def _lacking(self) -> int:
        """How many more bytes make the answer that begins what was read (at least 1)."""
        if self.size < 4:
            return 9 - self.size
        return max(1, 4 + int.from_bytes(self._peek(4), "big") - self.size)

    def _peek(self, n: int) -> bytes:
        """The first ``n`` bytes read (there are at least ``n``), as bytes."""
        first = self.segments[0]
        if len(first) >= n:
            return bytes(first[:n])
        return b"".join(_views(self.segments, n))

    def _take(self, n: int) -> list[memoryview]:
        """The first ``n`` bytes read (there are at least ``n``) as views, removed."""
        taken: list[memoryview] = []
        segments = self.segments
        self.size -= n
        while n:
            first = segments[0]
            if len(first) > n:
                taken.append(first[:n])
                segments[0] = first[n:]
                break
            taken.append(segments.popleft())
            n -= len(first)
        return taken

    def _split(self, route: Route) -> None:
        while self.size >= 9:
            head = self._peek(13 if self.size >= 13 else 9)
            size = int.from_bytes(head[:4], "big")
            if size > MAX_REPLY or size < 5:
                raise SFTPError(f"garbled SFTP reply ({size} bytes announced)")
            if self.size < 4 + size:
                return
            kind = head[4]
            num = int.from_bytes(head[5:9], "big")
            payload: Any
            if kind == CMD_DATA and self.data_only:
                if size < 9 or int.from_bytes(head[9:13], "big") != size - 9:
                    raise SFTPError("garbled SFTP data reply")
                self._take(13)
                views = self._take(size - 9)
                payload = views if self.views else _joined(views)
            else:
                self._take(9)
                payload = _joined(self._take(size - 5))
            if route(num, kind, payload):
                continue
            if kind == CMD_DATA and self.data_only:  # paramiko's owner expects the length
                data = _joined(payload) if self.views else payload
                payload = struct.pack(">I", len(data)) + data
            with self.client._lock:
                owner = self.client._expecting.pop(num, None)
            if owner is not None and owner is not type(None):
                owner._async_response(kind, paramiko.Message(payload), num)

    def check_empty(self) -> None:
        """Nothing may follow the last answer awaited: nothing else was asked."""
        if self.size:
            raise SFTPError("unexpected data after the last SFTP reply")


def _views(segments: Iterable[memoryview], n: int) -> list[memoryview]:
    """Views of the first ``n`` bytes of ``segments`` (which hold at least that many)."""
    out = []
    for segment in segments:
        if len(segment) >= n:
            out.append(segment[:n])
            break
        out.append(segment)
        n -= len(segment)
    return out


def _joined(views: list[memoryview]) -> bytes:
    return bytes(views[0]) if len(views) == 1 else b"".join(views)


#: Part of a file read: views of the pieces the channel handed over, in order.
Piece = list[memoryview]


def piece_size(piece: Piece) -> int:
    return sum(map(len, piece))


def cut_piece(piece: Piece, n: int) -> tuple[Piece, Piece]:
    """The first ``n`` bytes of ``piece`` and the rest, as views (nothing copied)."""
    for index, view in enumerate(piece):
        if len(view) >= n:
            head, tail = piece[:index], piece[index + 1 :]
            if n:
                head.append(view[:n])
            if len(view) > n:
                tail.insert(0, view[n:])
            return head, tail
        n -= len(view)
    return piece, []


def _receive(client: paramiko.SFTPClient, bulk: int, need: int) -> bytes | Pieces:
    """Up to ``bulk`` bytes from the client's channel: the pieces it holds, uncopied, where
    ``use_packet_pipe`` put a ``PacketPipe`` in place (else the bytes ``recv`` hands out),
    once ``need`` bytes are in (one wake-up per answer, not per packet)."""
    channel = client.sock
    pipe = getattr(channel, "in_buffer", None)
    if not isinstance(pipe, PacketPipe):
        return cast(bytes, channel.recv(bulk))
    pipe.pieces, pipe.need = True, need
    try:
        return cast(Pieces, channel.recv(bulk))
    finally:
        pipe.pieces, pipe.need = False, 1


def use_packet_pipe(client: paramiko.SFTPClient) -> None:
    """Give the client's channel a ``PacketPipe`` (see ``_pipe``) as its receive buffer.

    Called once the SFTP session is set up, while no answer is owed: nothing arrives while
    the buffers are swapped, and whatever the old buffer still held moves over first.
    """
    channel = client.get_channel()
    old, pipe = channel.in_buffer, PacketPipe()
    channel.in_buffer = pipe
    left = old.empty()
    if left:
        pipe.feed(left)


def open_for_write(
    client: paramiko.SFTPClient, path: str, mode: int | None, create: bool = True
) -> Stream:
    """Create or truncate ``path`` with ``mode`` (or open the existing file as it is)."""
    flags = SFTP_FLAG_WRITE | (SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC if create else 0)
    attributes = mode_attributes(mode) if create else paramiko.SFTPAttributes()
    reply = exchange(client, [(CMD_OPEN, (path, flags, attributes))])[0]
    if reply[0] not in (CMD_HANDLE, CMD_STATUS):
        raise SFTPError(f"unexpected reply type {reply[0]} to open")
    error = reply_error(client, reply, CMD_HANDLE)
    if error is not None:
        raise error
    return Stream(client, _handle(reply[1]))


# ------------------------------------------------------------------------------ reads
def open_for_read(
    client: paramiko.SFTPClient, path: str
) -> tuple[bytes, paramiko.SFTPAttributes | None]:
    """Open ``path`` for reading and stat it in one exchange: (handle, attributes or None).

    The size only plans the reads (see ``ReadStream``); the server's answers decide where
    the file ends.
    """
    opened, attrs = exchange(
        client, [(CMD_OPEN, (path, SFTP_FLAG_READ, paramiko.SFTPAttributes())), (CMD_STAT, (path,))]
    )
    if opened[0] not in (CMD_HANDLE, CMD_STATUS):
        raise SFTPError(f"unexpected reply type {opened[0]} to open")
    error = reply_error(client, opened, CMD_HANDLE)
    if error is not None:
        raise error
    found = None
    if attrs[0] == CMD_ATTRS:
        found = paramiko.SFTPAttributes._from_msg(paramiko.Message(attrs[1]))
    return _handle(opened[1]), found


class ReadStream:
    """One remote file read with up to ``READ_IN_FLIGHT`` read requests outstanding.

    paramiko's ``SFTPFile.read`` keeps one request in flight (a round trip per 255 KiB), and
    its ``prefetch`` keeps every answer until it is read (a whole 1 GiB file when the reader
    is slower than the link) in a thread of its own per file. Here requests go out as the
    reader takes data, so at most ``READ_IN_FLIGHT`` requests (4 MiB)
    are outstanding and at most a few answers wait in memory, whatever the file size; the
    answers are read in bulk and split here (``_Replies``), like the write side's.

    The size found at open plans the requests: the last one ends exactly at that size, then a
    one-byte request past it (the probe) and the close leave with it, so a small file costs
    two exchanges (open + stat, then reads + probe + close). The server decides where the file
    ends: the probe's end-of-file answer confirms the planned end. A short answer (a server
    that returns less than asked, or a file that shrank) has its rest asked again; an
    end-of-file answer earlier than planned ends the stream there (the caller compares sizes);
    data after the planned end (a file that grew) is read on through a fresh handle, as is a
    rest that could not be asked before the close went out.
    """

    def __init__(self, client: paramiko.SFTPClient, path: str, handle: bytes, size: int | None,
                 chunk: int) -> None:  # fmt: skip
        self.client = client
        self.path = path
        self.chunk = chunk
        self.replies = _Replies(client, BULK_READ_DATA, data_only=True, views=True)
        self._open(handle, size)
        #: Where the next piece handed out starts, and answers received ahead of it.
        self.position = 0
        self.ready: dict[int, Piece] = {}
        #: Where the server said the file ends (an end-of-file answer), once known.
        self.end: int | None = None
        self.error: OSError | None = None
        self.finished = False
        self._heard = False

    def _open(self, handle: bytes, size: int | None) -> None:
        self.handle = handle
        self.encoded = _field(handle)
        self.planned = size
        self.asked: dict[int, tuple[int, int]] = {}
        self.next_offset = 0
        self.close_number: int | None = None
        self.close_answered = False
        self.pending = bytearray()

    # ---------------------------------------------------------------------- requests
    def _ask(self, offset: int, length: int) -> None:
        num = _number(self.client)
        self.asked[num] = (offset, length)
        body = struct.pack(">I", num) + self.encoded + struct.pack(">QI", offset, length)
        self.pending += struct.pack(">IB", len(body) + 1, CMD_READ) + body

    def _ask_close(self) -> None:
        num = _number(self.client)
        self.close_number = num
        body = struct.pack(">I", num) + self.encoded
        self.pending += struct.pack(">IB", len(body) + 1, CMD_CLOSE) + body

    def _flush(self) -> None:
        if self.pending:
            _send(self.client, self.pending)
            self.pending = bytearray()

    def _top_up(self) -> None:
        """Ask for more while fewer than ``READ_IN_FLIGHT`` requests are outstanding."""
        while len(self.asked) < READ_IN_FLIGHT and self.close_number is None and self.end is None:
            offset, planned = self.next_offset, self.planned
            if planned is None:
                length = self.chunk
            elif offset < planned:
                length = min(self.chunk, planned - offset)
            else:  # the probe past the planned end, and the close with it
                self._ask(offset, 1)
                self.next_offset += 1
                self._ask_close()
                break
            self._ask(offset, length)
            self.next_offset += length
        self._flush()

    # ----------------------------------------------------------------------- answers
    def _route(self, num: int, kind: int, payload: Any) -> bool:
        if num == self.close_number:
            self.close_answered = True  # a failed close of a read handle loses nothing
            self._heard = True
            return True
        asked = self.asked.pop(num, None)
        if asked is None:
            return False
        self._heard = True
        offset, length = asked
        if kind == CMD_DATA:  # the data alone, as views (``_Replies.data_only``, ``views``)
            data: Piece = payload if isinstance(payload, list) else [memoryview(payload)]
            size = piece_size(data)
            if size > length:
                self.error = self.error or SFTPError("a read answered more than was asked")
                return True
            if data:
                self.ready[offset] = data
            if size < length and self.close_number is None and self.end is None:
                self._ask(offset + size, length - size)  # the rest of a short answer
            return True
        if kind == CMD_STATUS and payload[:4] == struct.pack(">I", SFTP_EOF):
            self.end = offset if self.end is None else min(self.end, offset)
            return True
        error = reply_error(self.client, (kind, bytes(payload)), CMD_DATA)
        self.error = self.error or error or SFTPError(f"unexpected reply type {kind} to a read")
        return True

    def _receive(self) -> None:
        """Read from the channel until at least one of this stream's answers has come."""
        self._heard = False
        self.replies.read(lambda: self._heard, self._route)
        self._flush()  # rests of short answers asked while routing

    def read(self) -> Piece:
        """The next piece of the file (up to ``chunk`` bytes), in order; empty at its end.

        A piece is a list of read-only views of the bytes paramiko handed over for the
        channel (no copy here); the caller makes the bytes it hands out with one join."""
        while True:
            data = self.ready.pop(self.position, None)
            if data is not None:
                size = piece_size(data)
                if self.end is not None and self.position + size > self.end:
                    data = cut_piece(data, max(0, self.end - self.position))[0]
                    size = piece_size(data)
                self.position += size
                self._top_up()
                return data
            if self.error is not None:
                raise self.error
            if self.end is not None and self.position >= self.end:
                self._finish()
                return []
            if self.asked or (self.close_number is not None and not self.close_answered):
                self._receive()
                continue
            if self.finished:
                return []
            if self.close_number is not None:  # data past the plan, or a rest asked too late
                handle, _ = open_for_read(self.client, self.path)
                self._open(handle, None)
                self.ready, self.end, self.next_offset = {}, None, self.position
            elif self.end is not None:  # a gap below an end-of-file answer: ask for it
                self._ask(self.position, min(self.chunk, self.end - self.position))
            self._top_up()

    def put_back(self, data: Piece) -> None:
        """The tail of the last piece, handed out again by the next ``read``."""
        self.position -= piece_size(data)
        self.ready[self.position] = data

    def _finish(self) -> None:
        """Every answer read and the handle closed: the channel is clean for its next user."""
        if self.finished:
            return
        if self.close_number is None:
            self._ask_close()
            self._flush()
        while self.asked or not self.close_answered:
            self._receive()
        self.replies.check_empty()
        self.finished = True
        self.ready.clear()

    def abandon(self) -> None:
        """Stop early (an error, a reader that gave up): read what is owed, close the handle."""
        self.end = self.position if self.end is None else self.end
        self.ready.clear()
        self._finish()


def close(client: paramiko.SFTPClient, handle: bytes) -> None:
    """Close, raising what the server says (a close can report a failed flush)."""
    client._request(CMD_CLOSE, handle)


def rename(client: paramiko.SFTPClient, temp: str, final: str) -> None:
    """``posix-rename@openssh.com``, read back in bulk (``SFTPClient.posix_rename`` reads its
    answer through two locked channel reads); raises what the server says."""
    error = rename_many(client, [(temp, final)])[0]
    if error is not None:
        raise error


# ------------------------------------------------------------------------------ batches
class Batch:
    """Many requests framed into few channel writes, their answers read back in bulk.

    For batches of files: 64 opens leave in one send and their handles come back together,
    instead of 64 round trips each waking two threads. The requests are numbered from
    ``SFTPClient.request_number`` like paramiko's own, but not entered in its ``_expecting``
    table (a weak-reference dictionary, costly per request): ``_collect`` matches the answers
    by number itself. Framed requests are sent whenever ``SEND_AT`` bytes have gathered, so a
    batch of whole files is never copied into one buffer, and ``progress`` (the stall guard)
    sees the bytes as the channel accepts them. Each send but the last is a whole number of
    packets (``packet_room``); the rest waits for the next: a send of 256 KiB and a bit cut
    off a tiny ninth packet every time, one packet in nine.
    """

    SEND_AT = 256 * 1024

    def __init__(
        self, client: paramiko.SFTPClient, progress: Callable[[int], None] | None = None
    ) -> None:
        self.client = client
        self.progress = progress
        self.numbers: dict[int, int] = {}
        self.pending = bytearray()
        self.room = packet_room(client.get_channel())

    def _next(self) -> int:
        num = _number(self.client)
        self.numbers[num] = len(self.numbers)
        return num

    def add(self, kind: int, body: bytes) -> None:
        """A request whose fields are already encoded (see ``_field``)."""
        self.pending += struct.pack(">IBI", len(body) + 5, kind, self._next())
        self.pending += body
        if len(self.pending) >= self.SEND_AT:
            self.flush()

    def add_write(self, handle: bytes, offset: int, data: bytes | memoryview) -> None:
        head = struct.pack(">I", self._next()) + _field(handle) + struct.pack(">Q", offset)
        self.pending += struct.pack(">IB", 1 + len(head) + 4 + len(data), CMD_WRITE)
        self.pending += head
        self.pending += struct.pack(">I", len(data))
        self.pending += data
        if len(self.pending) >= self.SEND_AT:
            self.flush()

    def flush(self, everything: bool = False) -> None:
        """Send the whole packets gathered (``everything``: all that is gathered)."""
        pending = self.pending
        cut = len(pending) if everything else len(pending) - len(pending) % self.room
        if not cut:
            return
        with memoryview(pending) as view:
            _send(self.client, view[:cut])
            self.pending = bytearray(view[cut:])
        if self.progress is not None:
            self.progress(cut)

    def replies(self, data_only: bool = False) -> list[Reply]:
        """Send what is left and return every answer, in request order (a DATA answer as its
        data alone with ``data_only``, see ``_Replies``)."""
        self.flush(everything=True)
        return _collect(self.client, self.numbers, data_only)


def _collect(
    client: paramiko.SFTPClient, numbers: dict[int, int], data_only: bool = False
) -> list[Reply]:
    """Read answers in bulk (``_Replies``) until every request in ``numbers`` has one.

    Only requests made on this channel are outstanding and the server answers in order, so
    nothing after the last of these answers can be in the buffer.
    """
    replies: list[Reply | None] = [None] * len(numbers)
    missing = [len(numbers)]

    def route(num: int, kind: int, payload: bytes) -> bool:
        index = numbers.get(num)
        if index is None:
            return False
        replies[index] = (kind, payload)
        missing[0] -= 1
        return True

    reader = _Replies(client, data_only=data_only)
    reader.read(lambda: missing[0] == 0, route)
    reader.check_empty()
    return cast(list[Reply], replies)


def exchange(client: paramiko.SFTPClient, requests: Sequence[Request]) -> list[Reply]:
    """Send requests (fields as ``SFTPClient._async_request`` takes them), return answers."""
    batch = Batch(client)
    for kind, args in requests:
        batch.add(kind, b"".join(_field(item) for item in args))
    return batch.replies() if requests else []


def _handle(payload: bytes) -> bytes:
    return payload[4 : 4 + int.from_bytes(payload[:4], "big")]


def open_many(
    client: paramiko.SFTPClient, paths: Sequence[str], mode: int | None
) -> list[bytes | OSError]:
    """Create or truncate every path with ``mode``: a handle or the error for each."""
    tail = struct.pack(">I", SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC)
    tail += _field(mode_attributes(mode))
    batch = Batch(client)
    for path in paths:
        batch.add(CMD_OPEN, _field(path) + tail)
    return [
        _handle(reply[1]) if error is None else error
        for reply in batch.replies()
        for error in [reply_error(client, reply, CMD_HANDLE)]
    ]


def write_many(
    client: paramiko.SFTPClient,
    handles: Sequence[bytes],
    contents: Sequence[bytes],
    mode: int | None,
    chunk: int,
    progress: Callable[[int], None] | None = None,
) -> list[int | OSError]:
    """Write each content (in ``chunk`` pieces), fstat, close: the stored size or the error.

    The mode given at open is set again (exactly) where the server's umask may have cut it.
    """
    chmod = _field(mode_attributes(mode)) if exact_mode(mode) is not None else None
    batch = Batch(client, progress)
    for handle, data in zip(handles, contents, strict=True):
        view = memoryview(data)
        for offset in range(0, len(data), chunk):
            batch.add_write(handle, offset, view[offset : offset + chunk])
        encoded = _field(handle)
        if chmod is not None:
            batch.add(CMD_FSETSTAT, encoded + chmod)
        batch.add(CMD_FSTAT, encoded)
        batch.add(CMD_CLOSE, encoded)
    replies = iter(batch.replies())
    outcome: list[int | OSError] = []
    for data in contents:
        error = None
        for _ in range(0, len(data), chunk):
            error = reply_error(client, next(replies), CMD_STATUS) or error
        if chmod is not None:
            error = error or reply_error(client, next(replies), CMD_STATUS)
        fstat, closed = next(replies), next(replies)
        error = error or reply_error(client, fstat, CMD_ATTRS)
        error = error or reply_error(client, closed, CMD_STATUS)
        outcome.append(error if error is not None else _stored_size(fstat[1]))
    return outcome


def read_small_many(
    client: paramiko.SFTPClient, paths: Sequence[str], sizes: Sequence[int]
) -> list[bytes | OSError | None]:
    """Read whole small files in two exchanges: each one's bytes, its open error, or None.

    Opens leave in one send; then, for each file opened, a read of its expected size (at most
    one request: ``chunk_size``), a one-byte read at that size (the probe) and the close. A
    file's bytes are returned only when the server sent exactly ``size`` bytes and answered
    the probe with end-of-file: a file that grew, shrank or answered short gives None, and
    the caller reads it the ordinary way (``ReadStream``), which decides what it holds.
    """
    flags = struct.pack(">I", SFTP_FLAG_READ) + _field(paramiko.SFTPAttributes())
    opens = Batch(client)
    for path in paths:
        opens.add(CMD_OPEN, _field(path) + flags)
    handles = [
        _handle(reply[1]) if error is None else error
        for reply in opens.replies()
        for error in [reply_error(client, reply, CMD_HANDLE)]
    ]
    reads = Batch(client)
    for handle, size in zip(handles, sizes, strict=True):
        if isinstance(handle, bytes):
            encoded = _field(handle)
            if size:
                reads.add(CMD_READ, encoded + struct.pack(">QI", 0, size))
            reads.add(CMD_READ, encoded + struct.pack(">QI", size, 1))
            reads.add(CMD_CLOSE, encoded)
    replies = iter(reads.replies(data_only=True))
    outcome: list[bytes | OSError | None] = []
    for handle, size in zip(handles, sizes, strict=True):
        if isinstance(handle, OSError):
            outcome.append(handle)
            continue
        data: bytes | None = b""
        if size:
            kind, payload = next(replies)
            data = payload if kind == CMD_DATA and len(payload) == size else None
        probe, _closed = next(replies), next(replies)  # a failed close of a read loses nothing
        at_end = probe[0] == CMD_STATUS and probe[1][:4] == struct.pack(">I", SFTP_EOF)
        outcome.append(data if at_end else None)
    return outcome


def close_many(client: paramiko.SFTPClient, handles: Sequence[bytes]) -> None:
    exchange(client, [(CMD_CLOSE, (handle,)) for handle in handles])


def rename_many(
    client: paramiko.SFTPClient, moves: Sequence[tuple[str, str]]
) -> list[OSError | None]:
    """``posix-rename@openssh.com`` each (temporary, final) pair: replaces atomically."""
    name = _field("posix-rename@openssh.com")
    batch = Batch(client)
    for temp, final in moves:
        batch.add(CMD_EXTENDED, name + _field(temp) + _field(final))
    return [reply_error(client, reply, CMD_STATUS) for reply in batch.replies()]


def remove_many(client: paramiko.SFTPClient, paths: Sequence[str]) -> list[OSError | None]:
    replies = exchange(client, [(CMD_REMOVE, (path,)) for path in paths])
    return [reply_error(client, reply, CMD_STATUS) for reply in replies]


def make_folder(client: paramiko.SFTPClient, path: str, mode: int | None) -> OSError | None:
    """mkdir with ``mode``; the mode is set again only where the server's umask may have cut it.

    An existing folder is never touched (mkdir fails first), so an operator's own base folder
    keeps its mode. The second round trip is paid only for modes with group or other bits.
    """
    error = reply_error(client, exchange(client, [(CMD_MKDIR, (path, mode_attributes(mode)))])[0],
                        CMD_STATUS)  # fmt: skip
    if error is None and (exact := exact_mode(mode)) is not None:
        chmod = exchange(client, [(CMD_SETSTAT, (path, mode_attributes(exact)))])[0]
        return reply_error(client, chmod, CMD_STATUS)
    return error


def exact_mode(mode: int | None) -> int | None:
    """The mode to set explicitly after creating: None when creating with it is enough.

    A create applies the server's umask, which (022, 027, 077 ...) only removes group and
    other bits; a mode without those comes through a create unchanged.
    """
    return mode if mode is not None and mode & 0o077 else None
